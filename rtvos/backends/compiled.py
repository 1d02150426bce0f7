"""`compile` backend: the per-frame step (embed the new frame + match against the cached embedding) as one
`torch.compile`d graph with static shapes.

Why one graph: the step is what runs every frame, so fusing embed and match lets Inductor schedule both as
one unit (and, on CUDA, replay it as a CUDA graph with mode="reduce-overhead"). `rtvos::deform_conv2d` stays a
single opaque node (it has a fake kernel), so the compiled graph calls the op's own kernel.

Nothing is compiled at import or construction: torch.compile is lazy, the first call of each shape compiles.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch
from torch import Tensor, nn

from ..models.rpmnet import RPMNet
from . import Backend

__all__ = ["StepModule", "EmbedModule", "MatchModule", "CompiledBackend", "probe", "compile_mode"]


class StepModule(nn.Module):
    """(x 1×3×S×S, prev_emb 1×32×S/4×S/4) → (emb, flow): the unit every compiled/exported backend runs."""

    def __init__(self, model: RPMNet, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype

    def forward(self, x: Tensor, prev_emb: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.autocast_dtype is None:
            emb = self.model.embed(x)
            return emb, self.model.match(prev_emb, emb, prior)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            emb = self.model.embed(x)
            flow = self.model.match(prev_emb, emb, prior)
        return emb.float(), flow.float()


class EmbedModule(nn.Module):
    """Anchor frames only need E(x): a separate, smaller graph."""

    def __init__(self, model: RPMNet, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.autocast_dtype is None:
            return self.model.embed(x)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            return self.model.embed(x).float()


class MatchModule(nn.Module):
    """match() alone, for callers that time the stages apart (the Segmenter uses step() when fused)."""

    def __init__(self, model: RPMNet, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype

    def forward(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        if self.autocast_dtype is None:
            return self.model.match(e_ref, e_tar, prior)
        with torch.autocast(e_ref.device.type, dtype=self.autocast_dtype):
            return self.model.match(e_ref, e_tar, prior).float()


def _cxx_compiler() -> str | None:
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _device_reason(device: torch.device) -> str | None:
    """Why Inductor cannot generate code for this device, or None."""
    if device.type == "cpu":
        return None if _cxx_compiler() else "torch.compile on CPU needs a C++ compiler (c++/g++/clang++) on PATH"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        try:
            import triton  # noqa: F401
        except Exception as e:  # pragma: no cover - depends on the install
            return f"torch.compile on CUDA needs triton ({type(e).__name__}: {e})"
        return None
    return f"device type {device.type!r} is not supported by this backend"


def probe() -> str | None:
    """Usable when Dynamo runs on this Python and Inductor can generate code for at least the CPU."""
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch._dynamo is not supported on this Python version"
    except Exception as e:  # pragma: no cover - depends on the install
        return f"torch._dynamo cannot be imported ({type(e).__name__}: {e})"
    reasons = [_device_reason(torch.device("cpu"))]
    if torch.cuda.is_available():
        reasons.append(_device_reason(torch.device("cuda")))
    if all(r is not None for r in reasons):
        return "; ".join(r for r in reasons if r)
    return None


def compile_mode(device: torch.device) -> str:
    """CUDA graphs ("reduce-overhead") remove per-kernel launch cost on CUDA; on CPU they do not exist."""
    return "reduce-overhead" if device.type == "cuda" else "default"


class CompiledBackend(Backend):
    name = "compile"
    fused = True

    def __init__(self, model: RPMNet, size: tuple[int, int], device: torch.device, precision: str = "fp32") -> None:
        super().__init__(model, size, device, precision)
        reason = _device_reason(device)
        if reason is not None:
            raise RuntimeError(f"backend 'compile' cannot run on {device}: {reason}")
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device for the compile backend (CPU fp16 convs are slow)")
        dtype = torch.float16 if precision == "fp16" else None
        self.mode = compile_mode(device)
        self._cudagraphs = self.mode == "reduce-overhead"
        opts: dict[str, Any] = {"mode": self.mode, "dynamic": False, "fullgraph": True}
        self._step = torch.compile(StepModule(model, dtype), **opts)
        self._embed = torch.compile(EmbedModule(model, dtype), **opts)
        self._match = torch.compile(MatchModule(model, dtype), **opts)

    def _check(self, x: Tensor) -> None:
        # Static shapes: a new size would silently trigger a recompile (seconds, and a second CUDA graph).
        if tuple(x.shape[-2:]) != tuple(self.size):
            raise ValueError(f"compile backend was built for size {self.size}, got input {tuple(x.shape)}")

    def _begin(self) -> None:
        if self._cudagraphs:  # tells the CUDA-graph tree that the previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()

    def embed(self, x: Tensor) -> Tensor:
        self._check(x)
        self._begin()
        emb = self._embed(x)
        # CUDA-graph outputs live in a static pool overwritten by the next replay; the Segmenter caches emb.
        return emb.clone() if self._cudagraphs else emb

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        self._begin()
        flow = self._match(e_ref, e_tar, prior)
        return flow.clone() if self._cudagraphs else flow

    def step(self, x: Tensor, prev_embedding: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        self._begin()
        emb, flow = self._step(x, prev_embedding, prior)
        if self._cudagraphs:
            return emb.clone(), flow.clone()
        return emb, flow
