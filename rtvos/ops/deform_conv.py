"""Deformable convolution (DCN v1 / v2) as one opaque torch custom op.

Why a custom op and not torchvision's: the exported graph must contain exactly one node
(``torch.ops.rtvos.deform_conv2d.default``) that a TensorRT plugin can swap in later, and the
op must run anywhere PyTorch runs (CPU, CUDA) without torchvision's compiled extension. The
semantics are bit-for-bit those of ``torchvision.ops.deform_conv2d`` (same argument order,
offset/mask layout and zero-outside bilinear sampling), so torchvision serves as the test
oracle.

The kernel is pure PyTorch built around a single ``F.grid_sample`` call over all kernel taps:
``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`` evaluated at the
normalised coordinate ``(2x + 1) / W - 1`` reproduces torchvision's ``bilinear_interpolate``
exactly (zero when ``x <= -1`` or ``x >= W``, out-of-range corners contribute 0). Two
algebraically identical evaluation orders are available and the cheaper one is picked from
the shapes:

* ``im2col``: sample the *input* at every tap (columns ``(N, C, K, L)``), apply the mask,
  contract with the weight in one batched matmul — the classic DCN formulation.
* ``project``: contract the weight first (one matmul to ``K * O`` channels, one slab per
  tap), then sample the *projected* maps at every tap and sum over taps. Sampling is
  linear per channel, so this is exact; it wins whenever ``offset_groups * out_channels <
  in_channels`` (every layer of RPM-Net's matching head) because bilinear gathers, not
  MACs, dominate on CPU, and the batch of ``N * K`` sampled images parallelises better.
"""

import math
from typing import Any, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["deform_conv2d", "DeformConv2d", "deform_conv2d_torch"]

IntPair = Union[int, Sequence[int]]
Strategy = Literal["auto", "im2col", "project"]

# Cost of one bilinear sample of one channel, in multiply-accumulate equivalents. Measured
# on CPU (AVX-512, float32): ~4 ns per sampled value vs ~0.03 ns per matmul MAC; the exact
# value only moves the break-even point, both strategies give the same result.
_SAMPLE_COST_MACS = 100


# --------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------
def _pair(value: IntPair, name: str) -> tuple[int, int]:
    """Accept ``int`` or a 2-sequence like torchvision, but reject anything else loudly."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return items[0], items[1]


def _out_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int
) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_args(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Optional[Tensor],
) -> tuple[int, int, int, int]:
    """Validate in Python so that misuse fails with a readable message instead of deep
    inside grid_sample (or, later, inside a TensorRT engine). Returns
    ``(offset_groups, weight_groups, out_h, out_w)``."""
    for name, t in (("input", input), ("offset", offset), ("weight", weight), ("mask", mask)):
        if t is not None and t.dim() != 4:
            raise ValueError(
                f"{name} must be a 4-D tensor, expected ndim 4 but got ndim {t.dim()} "
                f"(shape {tuple(t.shape)})"
            )
    if any(s <= 0 for s in stride):
        raise ValueError(f"stride must be positive, got {stride}")
    if any(p < 0 for p in padding):
        raise ValueError(f"padding must be non-negative, got {padding}")
    if any(d <= 0 for d in dilation):
        raise ValueError(f"dilation must be positive, got {dilation}")

    n, c, h, w = input.shape
    o, cw, kh, kw = weight.shape
    k = kh * kw
    if cw == 0 or c % cw != 0:
        raise ValueError(
            f"input channels must be a multiple of weight.shape[1] (channels per group): "
            f"expected input.shape[1] % {cw} == 0, got input.shape[1]={c}"
        )
    weight_groups = c // cw
    if o % weight_groups != 0:
        raise ValueError(
            f"weight.shape[0] (out_channels) must be divisible by the {weight_groups} weight "
            f"groups implied by input.shape[1] // weight.shape[1] = {c} // {cw}, "
            f"got out_channels={o}"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != o):
        raise ValueError(
            f"bias must have shape ({o},) to match weight.shape[0], got {tuple(bias.shape)}"
        )
    if k == 0 or offset.shape[1] == 0 or offset.shape[1] % (2 * k) != 0:
        raise ValueError(
            f"offset.shape[1] must be a positive multiple of 2 * kernel_h * kernel_w = {2 * k}, "
            f"got offset.shape[1]={offset.shape[1]}"
        )
    offset_groups = offset.shape[1] // (2 * k)
    if c % offset_groups != 0:
        raise ValueError(
            f"input channels must be divisible by the {offset_groups} offset groups implied by "
            f"offset.shape[1] // (2 * kh * kw) = {offset.shape[1]} // {2 * k}, "
            f"got input.shape[1]={c}"
        )
    out_h = _out_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = _out_size(w, kw, stride[1], padding[1], dilation[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"computed output size ({out_h}, {out_w}) is empty for input size ({h}, {w}), "
            f"kernel ({kh}, {kw}), stride {stride}, padding {padding}, dilation {dilation}"
        )
    expected_offset = (n, 2 * offset_groups * k, out_h, out_w)
    if tuple(offset.shape) != expected_offset:
        raise ValueError(
            f"offset must have shape (N, 2 * offset_groups * kh * kw, out_h, out_w) = "
            f"{expected_offset}, got {tuple(offset.shape)}"
        )
    if mask is not None:
        expected_mask = (n, offset_groups * k, out_h, out_w)
        if tuple(mask.shape) != expected_mask:
            raise ValueError(
                f"mask must have shape (N, offset_groups * kh * kw, out_h, out_w) = "
                f"{expected_mask}, got {tuple(mask.shape)}"
            )
    autocast = torch.is_autocast_enabled(input.device.type)  # the op casts everything then
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if t is None:
            continue
        if t.dtype != input.dtype and not autocast:
            raise ValueError(f"{name} dtype must match input dtype {input.dtype}, got {t.dtype}")
        if t.device != input.device:
            raise ValueError(
                f"{name} must be on the input's device {input.device}, got {t.device}"
            )
    return offset_groups, weight_groups, out_h, out_w


# --------------------------------------------------------------------------------------
# pure-PyTorch kernel (used by the op's CPU/CUDA implementation and by its backward)
# --------------------------------------------------------------------------------------
def _sampling_grid(
    offset: Tensor,
    in_h: int,
    in_w: int,
    kh: int,
    kw: int,
    out_h: int,
    out_w: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    offset_groups: int,
) -> Tensor:
    """Normalised (x, y) grid of shape ``(N, G, K, out_h, out_w, 2)`` for grid_sample.

    Pixel coordinate ``y = oy * stride - pad + i * dilation + dy`` maps to ``(2y + 1) / H - 1``
    under ``align_corners=False``, which is what makes grid_sample's zero padding coincide
    with torchvision's out-of-image rule, including ``H == 1``.
    """
    n = offset.shape[0]
    k = kh * kw
    off = offset.reshape(n, offset_groups, k, 2, out_h, out_w)
    opts: dict[str, Any] = {"device": offset.device, "dtype": offset.dtype}
    ys = torch.arange(out_h, **opts) * stride[0] - padding[0]
    xs = torch.arange(out_w, **opts) * stride[1] - padding[1]
    ty = torch.arange(kh, **opts) * dilation[0]
    tx = torch.arange(kw, **opts) * dilation[1]
    # tap index k = i * kw + j (row-major over the kernel, as in torchvision)
    base_y = (ty[:, None, None] + ys[None, :, None]).repeat_interleave(kw, dim=0)  # (K, Hout, 1)
    base_x = (tx[:, None, None] + xs[None, None, :]).repeat(kh, 1, 1)  # (K, 1, Wout)
    gy = (off[:, :, :, 0] + base_y) * (2.0 / in_h) + (1.0 / in_h - 1.0)
    gx = (off[:, :, :, 1] + base_x) * (2.0 / in_w) + (1.0 / in_w - 1.0)
    return torch.stack((gx, gy), dim=-1)


def _grid_sample(image: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(
        image, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _dense_weight(weight: Tensor, weight_groups: int) -> Tensor:
    """Block-diagonal (O, C, kh, kw) weight, so weight groups and offset groups can be
    combined in the project path without an in-place scatter (keeps autograd simple)."""
    o, cw, kh, kw = weight.shape
    wg = weight.reshape(weight_groups, o // weight_groups, cw, kh * kw)
    eye = torch.eye(weight_groups, device=weight.device, dtype=weight.dtype)
    dense = torch.einsum("goik,gh->gohik", wg, eye)
    return dense.reshape(o, weight_groups * cw, kh, kw)


def _choose_strategy(
    in_channels: int,
    in_hw: int,
    out_channels: int,
    weight_groups: int,
    offset_groups: int,
    taps: int,
    out_hw: int,
) -> Strategy:
    cw = in_channels // weight_groups
    im2col = _SAMPLE_COST_MACS * in_channels * taps * out_hw + out_channels * cw * taps * out_hw
    if offset_groups == 1:
        proj_macs = taps * out_channels * cw * in_hw
        if weight_groups > 1:  # grouped matmul yields group-major order: one transpose copy
            proj_macs += taps * out_channels * in_hw
    else:
        proj_macs = taps * out_channels * (in_channels // offset_groups) * in_hw
    project = _SAMPLE_COST_MACS * offset_groups * out_channels * taps * out_hw + proj_macs
    return "project" if project < im2col else "im2col"


def deform_conv2d_torch(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    mask: Optional[Tensor],
    strategy: Strategy = "auto",
) -> Tensor:
    """Differentiable pure-PyTorch deform_conv2d; arguments are assumed already validated."""
    orig_dtype = input.dtype
    if orig_dtype in (torch.float16, torch.bfloat16):
        # A half-precision grid cannot address pixels exactly (bf16 has 8 mantissa bits), so
        # the sampling math runs in float32.
        input, offset, weight = input.float(), offset.float(), weight.float()
        bias = None if bias is None else bias.float()
        mask = None if mask is None else mask.float()

    n, c, h, w = input.shape
    o, cw, kh, kw = weight.shape
    k = kh * kw
    weight_groups = c // cw
    offset_groups = offset.shape[1] // (2 * k)
    out_h = _out_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = _out_size(w, kw, stride[1], padding[1], dilation[1])
    out_hw = out_h * out_w
    grid = _sampling_grid(
        offset, h, w, kh, kw, out_h, out_w, stride, padding, dilation, offset_groups
    )
    if strategy == "auto":
        strategy = _choose_strategy(c, h * w, o, weight_groups, offset_groups, k, out_hw)

    if strategy == "im2col":
        cols = _grid_sample(
            input.reshape(n * offset_groups, c // offset_groups, h, w),
            grid.reshape(n * offset_groups, k * out_h, out_w, 2),
        ).reshape(n, offset_groups, c // offset_groups, k, out_hw)
        if mask is not None:
            cols = cols * mask.reshape(n, offset_groups, 1, k, out_hw)
        # channel-major, tap-minor columns match weight.reshape(O, Cw * K) without a copy
        cols = cols.reshape(n, weight_groups, cw * k, out_hw)
        out = torch.matmul(weight.reshape(weight_groups, o // weight_groups, cw * k), cols)
    elif strategy == "project":
        # z[n, g, k, o] = sum_{c in offset group g} W[o, c, k] * x[n, c]: a batched matmul
        # (faster than a 1x1 conv on CPU), laid out tap-major so each tap is one image.
        x_flat = input.reshape(n, c, h * w)
        if offset_groups == 1 and weight_groups > 1:
            og = o // weight_groups
            wp = weight.reshape(weight_groups, og, cw, k).permute(0, 3, 1, 2)
            z = torch.matmul(
                wp.reshape(weight_groups, k * og, cw), x_flat.reshape(n, weight_groups, cw, h * w)
            )  # (N, Gw, K*Og, HW) -> tap-major (N, K, Gw*Og, HW)
            z = z.reshape(n, weight_groups, k, og, h * w).transpose(1, 2)
        else:
            wd = weight if weight_groups == 1 else _dense_weight(weight, weight_groups)
            cg = c // offset_groups
            wp = wd.reshape(o, offset_groups, cg, k).permute(1, 3, 0, 2)
            z = torch.matmul(
                wp.reshape(offset_groups, k * o, cg), x_flat.reshape(n, offset_groups, cg, h * w)
            )  # (N, G, K*O, HW)
        samples = _grid_sample(
            z.reshape(n * offset_groups * k, o, h, w),
            grid.reshape(n * offset_groups * k, out_h, out_w, 2),
        ).reshape(n, offset_groups * k, o, out_hw)
        if mask is not None:
            samples = samples * mask.reshape(n, offset_groups * k, 1, out_hw)
        out = samples.sum(dim=1)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected 'auto', 'im2col' or 'project'")

    out = out.reshape(n, o, out_h, out_w)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out.to(orig_dtype)


# --------------------------------------------------------------------------------------
# custom op registration (torch.library.custom_op overwrites on re-definition, so
# re-importing this module is safe)
# --------------------------------------------------------------------------------------
@torch.library.custom_op("rtvos::deform_conv2d", mutates_args=())
def _deform_conv2d_op(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    mask: Optional[Tensor],
) -> Tensor:
    return deform_conv2d_torch(input, offset, weight, bias, stride, padding, dilation, mask)


@_deform_conv2d_op.register_fake
def _deform_conv2d_fake(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    mask: Optional[Tensor],
) -> Tensor:
    n, _, h, w = input.shape
    o, _, kh, kw = weight.shape
    out_h = _out_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = _out_size(w, kw, stride[1], padding[1], dilation[1])
    return input.new_empty((n, o, out_h, out_w))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
    input, offset, weight, bias, stride, padding, dilation, mask = inputs
    ctx.save_for_backward(input, offset, weight, bias, mask)
    ctx.conv_args = (list(stride), list(padding), list(dilation))  # type: ignore[attr-defined]


def _backward(
    ctx: Any, grad_output: Tensor  # a FunctionCtx; its stub lacks saved_tensors, needs_input_grad, conv_args
) -> tuple[Optional[Tensor], ...]:
    """Recompute the differentiable PyTorch forward and let autograd differentiate it: the
    op stays a single opaque node for export, yet needs no hand-written backward kernel.
    The saved tensors are used directly (not detached), so with ``create_graph=True`` the
    gradients themselves remain differentiable."""
    input, offset, weight, bias, mask = ctx.saved_tensors
    stride, padding, dilation = ctx.conv_args
    needs = ctx.needs_input_grad
    wanted = [
        (0, input, needs[0]),
        (1, offset, needs[1]),
        (2, weight, needs[2]),
        (7, mask, mask is not None and needs[7]),
    ]
    grads: list[Optional[Tensor]] = [None] * 8
    targets = [(i, t) for i, t, need in wanted if need]
    if targets:
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaves = [t if create_graph else t.detach().requires_grad_() for _, t in targets]
            args = {i: leaf for (i, _), leaf in zip(targets, leaves)}
            out = deform_conv2d_torch(
                args.get(0, input.detach()),
                args.get(1, offset.detach()),
                args.get(2, weight.detach()),
                None,
                stride,
                padding,
                dilation,
                args.get(7, None if mask is None else mask.detach()),
            )
            computed = torch.autograd.grad(
                out, leaves, grad_output, create_graph=create_graph, allow_unused=True
            )
        for (i, t), g in zip(targets, computed):
            grads[i] = torch.zeros_like(t) if g is None else g
    if bias is not None and needs[3]:
        grads[3] = grad_output.sum(dim=(0, 2, 3))
    return tuple(grads)


_deform_conv2d_op.register_autograd(_backward, setup_context=_setup_context)

# Like torchvision: under autocast the op runs in float32 (half-precision sampling grids
# cannot address pixels exactly), whatever mix of dtypes autocast produced upstream.
for _device_type in ("cpu", "cuda"):
    _deform_conv2d_op.register_autocast(_device_type, torch.float32)


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Drop-in for ``torchvision.ops.deform_conv2d`` (same arguments, same numbers) that
    lowers to the single node ``torch.ops.rtvos.deform_conv2d.default``.

    Shapes: input ``(N, C, H, W)``; offset ``(N, 2*G*kh*kw, Hout, Wout)`` holding ``(dy, dx)``
    per tap, ``G`` = offset groups; weight ``(O, C // groups, kh, kw)``; mask
    ``(N, G*kh*kw, Hout, Wout)`` (DCNv2 modulation) or None.
    """
    stride_ = _pair(stride, "stride")
    padding_ = _pair(padding, "padding")
    dilation_ = _pair(dilation, "dilation")
    _check_args(input, offset, weight, bias, stride_, padding_, dilation_, mask)
    return torch.ops.rtvos.deform_conv2d.default(
        input, offset, weight, bias, list(stride_), list(padding_), list(dilation_), mask
    )


class DeformConv2d(nn.Module):
    """Deformable conv that predicts its own offsets (and DCNv2 mask when ``modulated``).

    The offset branch is zero-initialised, so training starts from a plain convolution
    (mask = sigmoid(0) = 0.5 when modulated) and learns to deform from there.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
    ) -> None:
        super().__init__()
        if groups <= 0 or in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        if offset_groups <= 0 or in_channels % offset_groups != 0:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by offset_groups ({offset_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.offset_groups = offset_groups
        self.modulated = modulated
        kh, kw = self.kernel_size
        self._num_offsets = 2 * offset_groups * kh * kw
        self.offset_conv = nn.Conv2d(
            in_channels,
            (2 + int(modulated)) * offset_groups * kh * kw,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
        )
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        if bias:
            self.bias: Optional[nn.Parameter] = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same init as nn.Conv2d for the main weight; zero offsets so the layer begins as a
        regular convolution."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset_conv.weight)
        if self.offset_conv.bias is not None:
            nn.init.zeros_(self.offset_conv.bias)

    def _offset_and_mask(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        raw = self.offset_conv(x)
        if not self.modulated:
            return raw, None
        return raw[:, : self._num_offsets], torch.sigmoid(raw[:, self._num_offsets :])

    def offsets(self, x: Tensor) -> Tensor:
        """Predicted ``(N, 2*G*kh*kw, Hout, Wout)`` offsets, ``(dy, dx)`` per tap — exposed so
        the sampling locations can be visualised."""
        return self._offset_and_mask(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self._offset_and_mask(x)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.offset_groups != 1:
            s += f", offset_groups={self.offset_groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.modulated:
            s += ", modulated=True"
        return s
