"""TensorRT plugin for `rtvos::deform_conv2d` (IPluginV3 via TensorRT ≥ 10.7's Python plugin API) and the
Torch-TensorRT converter that maps the custom-op node onto it.

Why a plugin: TensorRT has no deformable convolution layer, and its ONNX parser has no DeformConv importer in
the builds checked here (TensorRT-RTX 1.6: "No importer registered for op: DeformConv"). The plugin runs the
op's own PyTorch kernel (`deform_conv2d_torch`) on TensorRT's stream, so its numbers are the eager numbers.

Status: NEVER RUN. Writing and running this needs `tensorrt` ≥ 10.7 with `tensorrt.plugin`, `torch_tensorrt`
and an NVIDIA GPU; none is usable on the machine it was written on (TensorRT-RTX 1.6.1 installs there but its
`tensorrt_rtx.plugin` module is broken — `tensorrt_rtx_bindings.plugin` is missing — and its networks have no
`add_plugin*` method). Everything is imported lazily; `register()` is idempotent.

This is the library's home of the plugin; `plugins/deform_conv_plugin.py` re-exports it. It imports only
`rtvos.ops.deform_conv` (inside `register()`), so the TensorRT modules of `rtvos.backends` form no cycle.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["PLUGIN_NAME", "import_tensorrt", "unavailable_reason", "register", "register_converter"]

PLUGIN_NAME = "rtvos::deform_conv2d"
_REGISTERED = False
_CONVERTER_REGISTERED = False


def import_tensorrt() -> ModuleType:
    """`tensorrt`, else `tensorrt_rtx` (same Python API for network definitions); ImportError naming both."""
    errors = []
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            return importlib.import_module(name)
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise ImportError("no TensorRT Python package (" + "; ".join(errors) + ")")


def unavailable_reason() -> str | None:
    """Why the plugin cannot be registered here, or None."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:
        return f"tensorrt is not importable ({type(e).__name__}: {e})"
    try:
        major, minor = (int(v) for v in trt.__version__.split(".")[:2])
    except ValueError:
        return f"cannot parse tensorrt version {trt.__version__!r}"
    if (major, minor) < (10, 7):
        return f"tensorrt {trt.__version__} < 10.7 has no tensorrt.plugin (IPluginV3 Python) API"
    try:
        importlib.import_module("tensorrt.plugin")
    except Exception as e:
        return f"tensorrt.plugin is not importable ({type(e).__name__}: {e})"
    return None


def register() -> None:
    """Register the plugin's shape function and its implementation with TensorRT's plugin registry.

    Optional tensors are not supported by the Python plugin API, so bias and mask are always passed (1-element
    dummies when absent) together with `has_bias` / `has_mask` attributes.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot register the {PLUGIN_NAME} TensorRT plugin: {reason}")
    import numpy.typing as npt
    import tensorrt.plugin as trtp
    import torch

    from rtvos.ops.deform_conv import deform_conv2d_torch

    @trtp.register(PLUGIN_NAME)
    def _desc(
        inp: trtp.TensorDesc,
        offset: trtp.TensorDesc,
        weight: trtp.TensorDesc,
        bias: trtp.TensorDesc,
        mask: trtp.TensorDesc,
        out_channels: int,
        kernel: npt.NDArray[Any],  # [kh, kw]
        stride: npt.NDArray[Any],
        padding: npt.NDArray[Any],
        dilation: npt.NDArray[Any],
        has_bias: int,
        has_mask: int,
    ) -> trtp.TensorDesc:
        out = inp.like()
        kh, kw = int(kernel[0]), int(kernel[1])
        out.shape_expr[1] = out_channels
        out.shape_expr[2] = (inp.shape_expr[2] + 2 * int(padding[0]) - int(dilation[0]) * (kh - 1) - 1) // int(
            stride[0]
        ) + 1
        out.shape_expr[3] = (inp.shape_expr[3] + 2 * int(padding[1]) - int(dilation[1]) * (kw - 1) - 1) // int(
            stride[1]
        ) + 1
        return out

    @trtp.impl(PLUGIN_NAME)
    def _impl(
        inp: trtp.Tensor,
        offset: trtp.Tensor,
        weight: trtp.Tensor,
        bias: trtp.Tensor,
        mask: trtp.Tensor,
        out_channels: int,
        kernel: npt.NDArray[Any],
        stride: npt.NDArray[Any],
        padding: npt.NDArray[Any],
        dilation: npt.NDArray[Any],
        has_bias: int,
        has_mask: int,
        outputs: tuple[trtp.Tensor],
        stream: int,
    ) -> None:
        dev = torch.device("cuda", torch.cuda.current_device())

        def t(x: trtp.Tensor) -> torch.Tensor:
            return torch.as_tensor(x, device=dev)  # zero-copy via __cuda_array_interface__

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            y = deform_conv2d_torch(
                t(inp),
                t(offset),
                t(weight),
                t(bias) if has_bias else None,
                [int(s) for s in stride],
                [int(p) for p in padding],
                [int(d) for d in dilation],
                t(mask) if has_mask else None,
            )
            t(outputs[0]).copy_(y)

    _REGISTERED = True


def register_converter() -> None:
    """Torch-TensorRT converter: one `rtvos.deform_conv2d` FX node → one plugin layer."""
    global _CONVERTER_REGISTERED
    if _CONVERTER_REGISTERED:
        return
    register()
    import numpy as np
    import tensorrt.plugin as trtp
    import torch
    from torch_tensorrt.dynamo.conversion import dynamo_tensorrt_converter
    from torch_tensorrt.dynamo.conversion.converter_utils import get_trt_tensor

    @dynamo_tensorrt_converter(torch.ops.rtvos.deform_conv2d.default, supports_dynamic_shapes=False)
    def _convert(ctx: Any, target: Any, args: tuple, kwargs: dict, name: str) -> Any:
        inp, offset, weight, bias, stride, padding, dilation, mask = (list(args) + [None] * 8)[:8]
        if isinstance(weight, torch.nn.Parameter | torch.Tensor):
            weight = weight.detach()
        o, _, kh, kw = (int(s) for s in weight.shape)
        dummy = np.zeros((1,), dtype=np.float32)
        tensors = [
            get_trt_tensor(ctx, inp, f"{name}_input"),
            get_trt_tensor(ctx, offset, f"{name}_offset"),
            get_trt_tensor(ctx, weight, f"{name}_weight"),
            get_trt_tensor(ctx, dummy if bias is None else bias, f"{name}_bias"),
            get_trt_tensor(ctx, dummy if mask is None else mask, f"{name}_mask"),
        ]
        plugin = trtp.op.rtvos.deform_conv2d(
            *tensors,
            out_channels=o,
            kernel=np.array([kh, kw], dtype=np.int32),
            stride=np.array(stride, dtype=np.int32),
            padding=np.array(padding, dtype=np.int32),
            dilation=np.array(dilation, dtype=np.int32),
            has_bias=int(bias is not None),
            has_mask=int(mask is not None),
        )
        layer = ctx.net.add_plugin(plugin)
        layer.name = name
        return layer.get_output(0)

    _CONVERTER_REGISTERED = True
