"""Backends run the per-frame network step; the Segmenter keeps stream state and mask propagation.

A backend exposes `embed(x)` (anchor frames, the uncached path) and `step(x, prev_embedding) -> (emb, flow)`
(one compiled unit per frame in the compiled backends). Eager is the reference every other backend must match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..common import AUTO, BUILTIN_BACKENDS, check_precision
from ..models.rpmnet import RPMNet

__all__ = ["Backend", "EagerBackend", "register_backend", "create_backend", "list_backends", "backend_status",
           "unavailable_reason",
           "resolve_backend", "resolve_device", "backend_names", "AUTO"]

class Backend:
    name = "base"
    fused = False  # True when step() runs embed + match as one unit (then they cannot be timed apart)

    def __init__(self, model: RPMNet, size: tuple[int, int], device: torch.device, precision: str = "fp32") -> None:
        self.model, self.size, self.device, self.precision = model, size, device, check_precision(precision)

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def embed_batch(self, xs: Tensor) -> Tensor:
        """The embedding of N frames (N×3×h×w) in one forward; a backend whose graphs have a fixed batch
        overrides it (`rtvos.batching` runs several streams' frames this way)."""
        return self.embed(xs)

    def prepare_batch(self, n: int) -> None:
        """Build what a batch of ``n`` needs now (an export traces the model: not while steps run it)."""

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def step(self, x: Tensor, prev_embedding: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        emb = self.embed(x)
        return emb, self.match(prev_embedding, emb, prior)


class EagerBackend(Backend):
    name = "eager"

    def __init__(self, model: RPMNet, size: tuple[int, int], device: torch.device, precision: str = "fp32") -> None:
        super().__init__(model, size, device, precision)
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision fp16 needs a CUDA device for the eager backend (CPU fp16 convs are slow)")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32

    def embed(self, x: Tensor) -> Tensor:
        if self.dtype == torch.float32:
            return self.model.embed(x)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.model.embed(x).float()

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        if self.dtype == torch.float32:
            return self.model.match(e_ref, e_tar, prior)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.model.match(e_ref, e_tar, prior).float()


_BACKENDS: dict[str, Callable[..., Backend]] = {"eager": EagerBackend}
_PROBES: dict[str, Callable[[], str | None]] = {"eager": lambda: None}


def register_backend(name: str, factory: Callable[..., Backend], probe: Callable[[], str | None]) -> None:
    """`probe()` returns None when the backend can run here, else the reason it cannot."""
    _BACKENDS[name] = factory
    _PROBES[name] = probe


def list_backends() -> list[str]:
    return list(_BACKENDS)


def backend_names() -> list[str]:
    """Every name a `backend=` argument (and the CLI's --backend) accepts: "auto" first, then the registry's."""
    return [AUTO, *list_backends()]


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here (a missing package, no GPU), or None when it can."""
    probe = _PROBES.get(name)
    if probe is None:
        raise ValueError(f"unknown backend {name!r}; registered: {', '.join(_PROBES)}")
    return probe()


def backend_status() -> dict[str, str]:
    out = {}
    for name, probe in _PROBES.items():
        reason = probe()
        out[name] = "available" if reason is None else f"unavailable: {reason}"
    return out


def resolve_device(device: str | torch.device = AUTO) -> torch.device:
    """"auto" → the first CUDA device when one is usable, else the CPU; anything else as torch parses it."""
    if isinstance(device, torch.device):
        return device
    if device == AUTO:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not 'auto', 'cpu' or 'cuda[:N]' ({err})") from None


def resolve_backend(name: str, device: torch.device, precision: str = "fp32") -> str:
    """Map "auto" to a concrete backend: ONNX Runtime on CPU (about 1.5-2x eager there, parity-tested),
    eager elsewhere (the GPU backends have not been verified on a GPU in this project yet)."""
    if name != AUTO:
        return name
    if torch.device(device).type == "cpu" and precision == "fp32" and _PROBES["onnx"]() is None:
        return "onnx"
    return "eager"


def create_backend(
    name: str, model: RPMNet, size: tuple[int, int], device: torch.device, precision: str = "fp32"
) -> Backend:
    if name != AUTO and name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {backend_names()}")
    chosen = resolve_backend(name, device, precision)
    reason = _PROBES[chosen]()
    if reason is not None:
        raise RuntimeError(f"backend {chosen!r} is not available here: {reason}")
    if name != AUTO or chosen == "eager":
        return _BACKENDS[chosen](model, size, device, precision)
    try:
        return _BACKENDS[chosen](model, size, device, precision)
    except Exception as e:  # auto must never be worse than eager: fall back, and say why
        import warnings

        warnings.warn(f"backend 'auto': {chosen} failed ({type(e).__name__}: {e}); using eager", stacklevel=2)
        return _BACKENDS["eager"](model, size, device, precision)


# -- optional backends: registered by name here, imported only when probed or created ----------------------------
def _register_optional_backends() -> None:
    """compile / onnx / tensorrt live in their own modules so importing rtvos never imports onnx or tensorrt."""
    import importlib

    def lazy(module: str, cls: str) -> tuple[Callable[..., Backend], Callable[[], str | None]]:
        def factory(*args: object, **kwargs: object) -> Backend:
            return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(*args, **kwargs)

        def probe() -> str | None:
            try:
                mod = importlib.import_module(f"{__name__}.{module}")
            except Exception as e:  # a broken optional install must not break `rtvos info`
                return f"cannot import {__name__}.{module} ({type(e).__name__}: {e})"
            return mod.probe()

        return factory, probe

    modules = {"compile": ("compiled", "CompiledBackend"), "onnx": ("onnx", "OnnxBackend"),
               "tensorrt": ("tensorrt", "TensorRTBackend")}
    for name in BUILTIN_BACKENDS:  # the one list of built-in names (rtvos.common); eager is registered above
        if name != "eager":
            register_backend(name, *lazy(*modules[name]))


_register_optional_backends()
