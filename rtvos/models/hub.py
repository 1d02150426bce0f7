"""`load_model`: one entry point for the default, a flow model, a shipped or registered network, or a checkpoint."""

from __future__ import annotations

import os
import warnings
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .flow_model import FLOW_MODELS, FlowModel
from .registry import create_model, list_models
from .rpmnet import RPMNet

__all__ = ["DEFAULT_MODEL", "DEFAULT_NETWORK", "SHIPPED", "RandomWeightsWarning", "load_model", "load_network",
           "load_model_reporting", "default_weights_path", "shipped_weights_path", "model_names"]

# What "default" means: DIS ultrafast-fine + the appearance stage (the Segmenter's default). The learned residual of
# the RPM-Net prior model adds no measurable accuracy over its DIS prior yet (docs/training.md), so it is not in
# the default's hot path; it stays selectable by name.
DEFAULT_MODEL = "dis_ultrafast_fine"
# The trained network that network-only tools (bench's backend comparison, viz, build-engine, training's warm
# start) use when asked for the default.
DEFAULT_NETWORK = "rpmnet_dis_r18_w50_cu"
# Trained weights that ship in rtvos/assets, by model name.
SHIPPED: dict[str, str] = {DEFAULT_NETWORK: f"{DEFAULT_NETWORK}.pt", "rpmnet_r18_paper": "rpmnet_r18_paper.pt"}


class RandomWeightsWarning(UserWarning):
    """The model was not trained: its masks are meaningless beyond plumbing checks."""


def shipped_weights_path(name: str) -> Path | None:
    path = Path(str(resources.files("rtvos") / "assets" / SHIPPED[name]))
    return path if path.is_file() else None


def default_weights_path() -> Path | None:
    """The shipped weights of the default network."""
    return shipped_weights_path(DEFAULT_NETWORK)


def model_names() -> list[str]:
    """Every name `load_model` takes: 'default', the flow models, the shipped and the registered networks."""
    return ["default", *FLOW_MODELS, *SHIPPED, *(n for n in list_models() if n not in SHIPPED)]


def load_model(spec: str | os.PathLike[str] = "default", matching: str = "deformable") -> RPMNet | FlowModel:
    """Two namespaces, one call: 'default' and the ``dis_*`` names are flow models (no weights); a shipped
    network name gives its trained weights; any other registered network name gives RANDOM weights (warned);
    a path loads a checkpoint."""
    spec_s = os.fspath(spec)
    if spec_s == "default":
        spec_s = DEFAULT_MODEL
    if spec_s in FLOW_MODELS:
        return FLOW_MODELS[spec_s]
    return load_network(spec_s, matching)


def load_network(spec: str | os.PathLike[str] = "default", matching: str = "deformable") -> RPMNet:
    """An RPM-Net network: 'default' is `DEFAULT_NETWORK`; otherwise as `load_model` (flow models refused)."""
    spec_s = os.fspath(spec)
    if spec_s == "default":
        spec_s = DEFAULT_NETWORK
    if spec_s in FLOW_MODELS:
        raise ValueError(f"{spec_s} is DIS flow with no network; name a network ({', '.join(SHIPPED)}, ...)")
    if spec_s in SHIPPED:
        path = shipped_weights_path(spec_s)
        if path is not None:
            return load_checkpoint(path).eval()
        if spec_s != DEFAULT_NETWORK:
            raise ValueError(f"shipped weights {SHIPPED[spec_s]} are missing from this install (rtvos/assets)")
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
    raise ValueError(f"unknown model {spec_s!r}: expected one of {model_names()} or a checkpoint path")


def load_model_reporting(spec: str | os.PathLike[str] = "default") -> tuple[RPMNet | FlowModel, bool]:
    """`load_model` for callers that report untrained weights themselves (the CLI's banner, the bench's
    `random_weights` field): returns (model, random_weights) and keeps the RandomWeightsWarning quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = load_model(spec)
    return model, not model.meta.get("trained", False)
