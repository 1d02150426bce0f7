"""Optional Triton forward for `rtvos::deform_conv2d` on CUDA: one kernel samples the deformable columns
(bilinear, torchvision's zero-outside rule, modulation mask applied), then one batched matmul with the weight.

Why: the pure-PyTorch op materialises a sampling grid and runs grid_sample over every tap; a fused sampler
reads offsets once and writes the columns directly.

Status: the kernel has only ever run under Triton's CPU interpreter (TRITON_INTERPRET=1, see
tests/test_backends.py), never on a GPU, and it is never enabled implicitly: call `enable()` to register it as
the op's CUDA implementation (forward only; autograd still recomputes with the PyTorch kernel).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

__all__ = ["deform_conv2d_triton", "enable", "unavailable_reason"]


def unavailable_reason() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as e:
        return f"triton is not importable ({type(e).__name__}: {e})"
    return None


@functools.lru_cache(maxsize=None)
def _kernel() -> Any:
    """Built on first use (triton.jit reads TRITON_INTERPRET when it decorates)."""
    import triton
    import triton.language as tl

    @triton.jit
    def deform_cols_kernel(
        inp, off, msk, cols,
        C, H, W, OH, OW, CPG,  # CPG: channels per offset group
        SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        DH: tl.constexpr, DW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
        HAS_MASK: tl.constexpr, BLOCK: tl.constexpr,
    ):
        nc = tl.program_id(0)  # n * C + c
        n = nc // C
        c = nc % C
        g = c // CPG
        L = OH * OW
        lo = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        valid_l = lo < L
        oy = lo // OW
        ox = lo % OW
        K: tl.constexpr = KH * KW
        img = inp + nc * H * W
        for k in tl.static_range(K):
            i = k // KW
            j = k % KW
            base = ((n * (2 * (C // CPG) * K)) + (g * K + k) * 2) * L
            dy = tl.load(off + base + lo, mask=valid_l, other=0.0)
            dx = tl.load(off + base + L + lo, mask=valid_l, other=0.0)
            y = (oy * SH - PH + i * DH).to(tl.float32) + dy
            x = (ox * SW - PW + j * DW).to(tl.float32) + dx
            inside = (y > -1.0) & (y < H) & (x > -1.0) & (x < W) & valid_l
            y0f = tl.floor(y)
            x0f = tl.floor(x)
            y0 = y0f.to(tl.int32)
            x0 = x0f.to(tl.int32)
            y1 = y0 + 1
            x1 = x0 + 1
            ly = y - y0f
            lx = x - x0f
            hy = 1.0 - ly
            hx = 1.0 - lx
            m00 = inside & (y0 >= 0) & (x0 >= 0)
            m01 = inside & (y0 >= 0) & (x1 <= W - 1)
            m10 = inside & (y1 <= H - 1) & (x0 >= 0)
            m11 = inside & (y1 <= H - 1) & (x1 <= W - 1)
            v00 = tl.load(img + y0 * W + x0, mask=m00, other=0.0)
            v01 = tl.load(img + y0 * W + x1, mask=m01, other=0.0)
            v10 = tl.load(img + y1 * W + x0, mask=m10, other=0.0)
            v11 = tl.load(img + y1 * W + x1, mask=m11, other=0.0)
            val = hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11
            val = tl.where(inside, val, 0.0)
            if HAS_MASK:
                mbase = (n * ((C // CPG) * K) + g * K + k) * L
                val = val * tl.load(msk + mbase + lo, mask=valid_l, other=0.0)
            # cols layout (N, C, K, L): channel-major, tap-minor, as weight.reshape(O, Cw * K) expects
            tl.store(cols + (nc * K + k) * L + lo, val, mask=valid_l)

    return deform_cols_kernel


def deform_conv2d_triton(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    mask: Tensor | None,
    block: int = 128,
) -> Tensor:
    """Same contract as `rtvos::deform_conv2d` (arguments assumed validated); float32 math."""
    import triton

    orig_dtype = input.dtype
    x = input.float().contiguous()
    off = offset.float().contiguous()
    w = weight.float()
    n, c, h, wd = x.shape
    o, cw, kh, kw = w.shape
    k = kh * kw
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    groups_off = off.shape[1] // (2 * k)
    m = mask.float().contiguous() if mask is not None else off  # dummy pointer when HAS_MASK is False
    cols = torch.empty((n, c, k, oh * ow), device=x.device, dtype=torch.float32)
    grid = (n * c, triton.cdiv(oh * ow, block))
    _kernel()[grid](
        x, off, m, cols, c, h, wd, oh, ow, c // groups_off,
        SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], DH=dilation[0], DW=dilation[1],
        KH=kh, KW=kw, HAS_MASK=mask is not None, BLOCK=block,
    )
    wg = c // cw
    out = torch.matmul(w.reshape(wg, o // wg, cw * k), cols.reshape(n, wg, cw * k, oh * ow))
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.float().reshape(1, o, 1, 1)
    return out.to(orig_dtype)


def enable() -> None:
    """Register the Triton forward as the CUDA kernel of `rtvos::deform_conv2d` (explicit opt-in, untested on
    GPU). The fake kernel, autograd (PyTorch recompute) and autocast registrations are unchanged."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot enable the Triton deform_conv2d kernel: {reason}")
    import rtvos.ops.deform_conv  # noqa: F401  (defines the op)

    torch.library.register_kernel("rtvos::deform_conv2d", "cuda", deform_conv2d_triton)
