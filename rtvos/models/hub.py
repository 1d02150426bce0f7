"""`load_model`: one entry point for the shipped default, a registered name or a checkpoint path."""

from __future__ import annotations

import os
import warnings
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .registry import create_model, list_models
from .rpmnet import RPMNet

__all__ = ["DEFAULT_MODEL", "DEFAULT_WEIGHTS", "RandomWeightsWarning", "load_model", "default_weights_path"]

# Architecture of the shipped default until trained weights say otherwise.
DEFAULT_MODEL = "rpmnet_r18"
DEFAULT_WEIGHTS = "default.pt"


class RandomWeightsWarning(UserWarning):
    """The model was not trained: its masks are meaningless beyond plumbing checks."""


def default_weights_path() -> Path | None:
    path = Path(str(resources.files("rtvos") / "assets" / DEFAULT_WEIGHTS))
    return path if path.is_file() else None


def load_model(spec: str | os.PathLike[str] = "default", matching: str = "deformable") -> RPMNet:
    """'default' → the shipped trained weights; a registered name → random init (warned); a path → checkpoint."""
    spec_s = os.fspath(spec)
    if spec_s == "default":
        path = default_weights_path()
        if path is not None:
            return load_checkpoint(path).eval()
        spec_s = DEFAULT_MODEL
    if spec_s in list_models():
        # Seeded, without touching the caller's RNG: the same name gives the same random weights in every
        # process, so runs are reproducible and weight-keyed caches (ONNX exports) are reused.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(spec_s, matching=matching)
        model.meta = {"trained": False, "source": f"random init ({spec_s})"}
        warnings.warn(
            f"{spec_s} has RANDOM weights (no trained checkpoint given or shipped): masks will be meaningless",
            RandomWeightsWarning,
            stacklevel=2,
        )
        return model.eval()
    if os.sep in spec_s or spec_s.endswith((".pt", ".pth")) or Path(spec_s).exists():
        return load_checkpoint(spec_s).eval()
    raise ValueError(f"unknown model {spec_s!r}: expected 'default', a checkpoint path, or one of {list_models()}")
