"""Checkpoints: weights + model config in one file, loadable with `weights_only=True` (no pickled code)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .rpmnet import RPMNet, RPMNetConfig

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint"]

FORMAT = "rtvos.rpmnet"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model; the message is one line."""


def save_checkpoint(
    model: RPMNet, path: str | os.PathLike[str], meta: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """fp16 storage (`half=True`) halves the file; weights come back as fp32 on load."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused the file; say why in our own words
        text = str(e)
        if "GLOBAL" in text:  # it names a class/function to import: the file carries code, not just tensors
            raise CheckpointError(
                f"refused {path}: it contains Python code objects (pickled classes or functions), not only "
                "weights; rtvos loads only plain tensor checkpoints (save one with rtvos.models.save_checkpoint)"
            ) from None
        skip = ("weights only load failed", "please file", "check the documentation", "weightsunpickler error")
        detail = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().lower().startswith(skip)),
                      type(e).__name__)
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid checkpoint file ({detail[:120]})") from None
    except Exception as e:  # torch raises many types for garbage input
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rtvos checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format_version')}; this rtvos reads up to {FORMAT_VERSION}"
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path} is missing its '{key}' entry")
    return payload


def load_checkpoint(
    path: str | os.PathLike[str], model: RPMNet | None = None, map_location: str | torch.device = "cpu"
) -> RPMNet:
    """Build the model the checkpoint describes (or fill `model`, which must have the same config)."""
    payload = read_checkpoint(path)
    try:
        config = RPMNetConfig(**payload["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid model config {payload['config']}: {e}") from None
    if model is None:
        model = RPMNet(config)
    elif model.config != config:
        raise CheckpointError(f"{path} holds a {config} model, not the requested {model.config}")
    own = model.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"{path} does not fit {config}: " + "; ".join(parts))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a diverged run: every mask would be garbage
        raise CheckpointError(f"refused {path}: {len(bad)} weight tensor(s) hold NaN or Inf (e.g. {bad[0]})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    model.meta = {"trained": True, **payload.get("meta", {})}
    model.meta["source"] = str(path)
    return model.to(map_location)
