"""`tensorrt` backend: runs cached TensorRT engines (built by `rtvos.backends.tensorrt_engines`) for the step and
for embed.

Why engines from disk: building takes minutes and is specific to weights, shape, precision, TensorRT version
and GPU; `rtvos build-engine` builds ahead of time and this backend builds on first use if none is cached.

Status: NEVER RUN — needs an NVIDIA GPU, `tensorrt` ≥ 10.7 and (for the default route) `torch_tensorrt`.
`probe()` names what is missing.

Imports stay inside `rtvos`: this module → `tensorrt_engines` (build + user-cache engine paths) →
`tensorrt_plugin`; `engines/` and `plugins/` only re-export those modules, so they import rtvos, never the
reverse.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor

from ..models.rpmnet import RPMNet
from . import Backend

__all__ = ["TensorRTBackend", "probe"]


def probe() -> str | None:
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:
        try:
            rtx = importlib.import_module("tensorrt_rtx")
            return (
                f"tensorrt is not installed (found tensorrt_rtx {rtx.__version__}, which has no plugin layers in "
                "networks, so the deformable conv cannot be a plugin; the engine route='onnx' could use it)"
            )
        except Exception:
            return f"tensorrt is not importable ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return f"tensorrt {trt.__version__} needs an NVIDIA GPU; torch.cuda.is_available() is False"
    return None


def _torch_tensorrt_reason() -> str | None:
    try:
        importlib.import_module("torch_tensorrt")
    except Exception as e:
        return f"torch_tensorrt is not importable ({type(e).__name__}: {e})"
    from .tensorrt_plugin import unavailable_reason

    return unavailable_reason()


class _Engine:
    """One deserialized engine + execution context, fed torch CUDA tensors on torch's current stream."""

    def __init__(self, trt: Any, data: bytes, device: torch.device) -> None:
        self.trt, self.device = trt, device
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the cached engine (stale? rebuild with --force)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def __call__(self, *args: Tensor) -> list[Tensor]:
        if len(args) != len(self.inputs):
            raise ValueError(f"engine takes {len(self.inputs)} inputs {self.inputs}, got {len(args)}")
        keep = []
        for name, t in zip(self.inputs, args):
            t = t.to(self.device, torch.float32).contiguous()
            keep.append(t)
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = torch.empty(shape, device=self.device, dtype=torch.float32)
            self.context.set_tensor_address(name, buf.data_ptr())
            outs.append(buf)
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outs


class TensorRTBackend(Backend):
    name = "tensorrt"
    fused = True

    def __init__(
        self, model: RPMNet, size: tuple[int, int], device: torch.device, precision: str = "fp32", route: str = "auto"
    ) -> None:
        super().__init__(model, size, device, precision)
        if device.type != "cuda":
            raise RuntimeError(f"backend 'tensorrt' needs a CUDA device, got {device}")
        if model.uses_prior:
            raise RuntimeError("backend 'tensorrt' does not build prior (rpmnet_dis) models yet; use onnx or eager")
        from .tensorrt_engines import build_engine

        if route == "auto":
            route = "torch_tensorrt" if _torch_tensorrt_reason() is None else "onnx"
        trt = importlib.import_module("tensorrt")
        self.route = route
        self.engines = {}
        for kind in ("step", "embed"):
            path = build_engine(model, size, precision, kind=kind, route=route, device=device)
            self.engines[kind] = _Engine(trt, path.read_bytes(), device)

    def embed(self, x: Tensor) -> Tensor:
        return self.engines["embed"](x)[0]

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        with torch.no_grad():  # not a separate engine: the Segmenter uses step() for fused backends
            return self.model.match(e_ref, e_tar, prior)

    def step(self, x: Tensor, prev_embedding: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outs = dict(zip(self.engines["step"].outputs, self.engines["step"](x, prev_embedding)))
        return outs["emb"], outs["flow"]
