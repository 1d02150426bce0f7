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

__all__ = ["DEFAULT_MODEL", "DEFAULT_WEIGHTS", "SHIPPED", "RandomWeightsWarning", "load_model", "load_model_reporting",
           "default_weights_path", "shipped_weights_path"]

# Architecture of the shipped default (what a missing default.pt falls back to, with random weights).
DEFAULT_MODEL = "rpmnet_dis_r18_w50_cu"
DEFAULT_WEIGHTS = "default.pt"
# Trained weights that ship in rtvos/assets, by name: the default, and the paper's exact architecture
# (R18 embedding + deformable matching, no prior), trained self-supervised in session 2 (docs/training.md).
SHIPPED: dict[str, str] = {"default": DEFAULT_WEIGHTS, "rpmnet_r18_paper": "rpmnet_r18_paper.pt"}


class RandomWeightsWarning(UserWarning):
    """The model was not trained: its masks are meaningless beyond plumbing checks."""


def shipped_weights_path(name: str) -> Path | None:
    path = Path(str(resources.files("rtvos") / "assets" / SHIPPED[name]))
    return path if path.is_file() else None


def default_weights_path() -> Path | None:
    return shipped_weights_path("default")


def load_model(spec: str | os.PathLike[str] = "default", matching: str = "deformable") -> RPMNet:
    """'default' (or another `SHIPPED` name) → shipped trained weights; a registered name → random init
    (warned); a path → checkpoint."""
    spec_s = os.fspath(spec)
    if spec_s in SHIPPED:
        path = shipped_weights_path(spec_s)
        if path is not None:
            return load_checkpoint(path).eval()
        if spec_s != "default":
            raise ValueError(f"shipped weights {SHIPPED[spec_s]} are missing from this install (rtvos/assets)")
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
    raise ValueError(f"unknown model {spec_s!r}: expected one of {list(SHIPPED)}, a checkpoint path, or one of "
                     f"{list_models()}")


def load_model_reporting(spec: str | os.PathLike[str] = "default") -> tuple[RPMNet, bool]:
    """`load_model` for callers that report untrained weights themselves (the CLI's banner, the bench's
    `random_weights` field): returns (model, random_weights) and keeps the RandomWeightsWarning quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = load_model(spec)
    return model, not model.meta.get("trained", False)
