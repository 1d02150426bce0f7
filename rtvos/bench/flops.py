"""The compute floor: model FLOPs per frame (FlopCounterMode, taught the custom deformable conv) and the
machine's measured matmul peak."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..stats import Timer

__all__ = [
    "BILINEAR_FLOPS_PER_POINT",
    "BILINEAR_FLOPS_PER_VALUE",
    "count_step_flops",
    "deform_conv2d_flops",
    "measure_peak_gflops",
    "register_deform_conv_flops",
]

#: One bilinear sample of one channel: 4 corner products + 3 adds.
BILINEAR_FLOPS_PER_VALUE = 7
#: One sampling point (per offset group): position + offset (2), fractions (2), 1−fraction (2), 4 weights (4).
BILINEAR_FLOPS_PER_POINT = 10


def deform_conv2d_flops(
    input_shape: Sequence[int],
    offset_shape: Sequence[int],
    weight_shape: Sequence[int],
    bias_shape: Sequence[int] | None,
    stride: Any = None,
    padding: Any = None,
    dilation: Any = None,
    mask_shape: Sequence[int] | None = None,
    *args: Any,
    out_shape: Sequence[int],
    **kwargs: Any,
) -> int:
    """FLOPs of one deformable conv as DCN defines it (im2col order), whatever order the kernel picks.

    Convolution: 2·N·Cout·(Cin/groups)·k·k·Hout·Wout. Sampling: every input channel at every tap and output
    position, BILINEAR_FLOPS_PER_VALUE each (+1 for the DCNv2 modulation), plus the bilinear weights once per
    point and offset group. Bias: one add per output value.
    """
    n, cin = int(input_shape[0]), int(input_shape[1])
    cout, cin_per_group, kh, kw = (int(v) for v in weight_shape)
    hout, wout = int(out_shape[2]), int(out_shape[3])
    taps, points = kh * kw, hout * wout
    offset_groups = max(1, int(offset_shape[1]) // (2 * taps))
    conv = 2 * n * cout * cin_per_group * taps * points
    per_value = BILINEAR_FLOPS_PER_VALUE + (1 if mask_shape is not None else 0)
    sampling = n * cin * taps * points * per_value + n * offset_groups * taps * points * BILINEAR_FLOPS_PER_POINT
    bias = n * cout * points if bias_shape is not None else 0
    return conv + sampling + bias


_DEFORM_FLOPS_REGISTERED = False


def register_deform_conv_flops() -> None:
    """Teach FlopCounterMode the custom op (idempotent); without it the deformable convs count as zero."""
    global _DEFORM_FLOPS_REGISTERED
    if _DEFORM_FLOPS_REGISTERED:
        return
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    from ..ops import deform_conv  # noqa: F401  (defines torch.ops.rtvos.deform_conv2d)

    target = torch.ops.rtvos.deform_conv2d
    if target not in flop_registry:
        register_flop_formula(target)(deform_conv2d_flops)
    _DEFORM_FLOPS_REGISTERED = True


def count_step_flops(step: Callable[[], Any]) -> dict[str, Any]:
    """FLOPs of one call (e.g. a cached `Segmenter.step`), total and per op.

    FlopCounterMode counts matmul/conv-like ops only (elementwise ops, grid_sample of the mask warp and resizes
    are free to it), so the floor derived from this is a lower bound, as a floor should be.
    """
    from torch.utils.flop_counter import FlopCounterMode

    register_deform_conv_flops()
    with FlopCounterMode(display=False) as counter:
        step()
    by_op = {str(k).removeprefix("aten.").removesuffix(".default"): int(v)
             for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"flops_per_frame": int(counter.get_total_flops()), "flops_by_op": by_op}


def measure_peak_gflops(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = 5
) -> dict[str, Any]:
    """Best-of-`repeats` GFLOP/s of an n×n matmul at the current thread count: the machine's attainable peak."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    timer = Timer(device)
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: thread pool, cuBLAS heuristics
        times = [timer.time(lambda: torch.mm(a, b))[1] for _ in range(repeats)]
    flops = 2 * n**3
    best = min(times)
    return {
        "gflops": flops / (best * 1e6),
        "median_gflops": flops / (float(np.median(times)) * 1e6),
        "method": f"{str(dtype).removeprefix('torch.')} matmul {n}x{n}, best of {repeats}, {timer.call_method}",
        "threads": torch.get_num_threads(),
    }
