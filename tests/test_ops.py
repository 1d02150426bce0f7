"""Tests for rtvos.ops.deform_conv2d / DeformConv2d.

The op must reproduce torchvision's numbers exactly (torchvision is the oracle where it is
importable, a literal loop transcription of its CPU kernel otherwise) and must survive
export/compile as a single node, because a TensorRT plugin later replaces that node.
"""

import importlib.util
import math
import random
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtvos.ops import DeformConv2d, deform_conv2d
from rtvos.ops import deform_conv as dc_module

try:
    import torchvision.ops as tv_ops

    _TV_SKIP_REASON = ""
except Exception as exc:  # pragma: no cover - depends on the environment
    tv_ops = None
    _TV_SKIP_REASON = f"torchvision is not importable ({type(exc).__name__}: {exc})"

requires_torchvision = pytest.mark.skipif(tv_ops is None, reason=_TV_SKIP_REASON)

F64 = torch.float64
STRATEGIES = ("im2col", "project")
OP_TARGET = "rtvos.deform_conv2d"


# --------------------------------------------------------------------------------------
# slow loop reference (as torchvision keeps its own in its test_ops.py)
# --------------------------------------------------------------------------------------
def _bilinear_reference(image: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """torchvision's ``bilinear_interpolate`` transcribed literally, for a (C, H, W) image
    at scalar tensor coordinates (kept as tensors so autograd reaches the offsets)."""
    c, height, width = image.shape
    yf, xf = float(y.detach()), float(x.detach())
    zero = image.new_zeros(c)
    if yf <= -1 or yf >= height or xf <= -1 or xf >= width:
        return zero
    y_low, x_low = math.floor(yf), math.floor(xf)
    y_high, x_high = y_low + 1, x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    v1 = image[:, y_low, x_low] if y_low >= 0 and x_low >= 0 else zero
    v2 = image[:, y_low, x_high] if y_low >= 0 and x_high <= width - 1 else zero
    v3 = image[:, y_high, x_low] if y_high <= height - 1 and x_low >= 0 else zero
    v4 = image[:, y_high, x_high] if y_high <= height - 1 and x_high <= width - 1 else zero
    return hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4


def deform_conv2d_reference(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: dc_module.IntPair = 1,
    padding: dc_module.IntPair = 0,
    dilation: dc_module.IntPair = 1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Obviously-correct loop implementation (one Python iteration per output pixel and tap),
    independent of grid_sample, used to validate the fast path on tiny tensors; it shares the op's
    argument checks, so both reject the same misuse."""
    stride_ = dc_module._pair(stride, "stride")
    padding_ = dc_module._pair(padding, "padding")
    dilation_ = dc_module._pair(dilation, "dilation")
    offset_groups, weight_groups, out_h, out_w = dc_module._check_args(
        input, offset, weight, bias, stride_, padding_, dilation_, mask
    )
    n_batch, c, _, _ = input.shape
    o, cw, kh, kw = weight.shape
    k = kh * kw
    cg = c // offset_groups
    og = o // weight_groups
    outputs = []
    for n in range(n_batch):
        group_cols = []
        for g in range(offset_groups):
            image = input[n, g * cg : (g + 1) * cg]
            taps = []
            for i in range(kh):
                for j in range(kw):
                    tap = i * kw + j
                    pixels = []
                    for oy in range(out_h):
                        for ox in range(out_w):
                            dy = offset[n, (g * k + tap) * 2, oy, ox]
                            dx = offset[n, (g * k + tap) * 2 + 1, oy, ox]
                            y = oy * stride_[0] - padding_[0] + i * dilation_[0] + dy
                            x = ox * stride_[1] - padding_[1] + j * dilation_[1] + dx
                            value = _bilinear_reference(image, y, x)
                            if mask is not None:
                                value = value * mask[n, g * k + tap, oy, ox]
                            pixels.append(value)
                    taps.append(torch.stack(pixels, dim=-1).reshape(cg, out_h, out_w))
            group_cols.append(torch.stack(taps, dim=1))  # (cg, K, Hout, Wout)
        cols = torch.cat(group_cols, dim=0)  # (C, K, Hout, Wout)
        per_group = []
        for g in range(weight_groups):
            wg = weight[g * og : (g + 1) * og].reshape(og, cw, k)
            per_group.append(torch.einsum("ock,ckhw->ohw", wg, cols[g * cw : (g + 1) * cw]))
        out = torch.cat(per_group, dim=0)
        if bias is not None:
            out = out + bias[:, None, None]
        outputs.append(out)
    return torch.stack(outputs, dim=0)


# --------------------------------------------------------------------------------------
# random problem generation
# --------------------------------------------------------------------------------------
@dataclass
class Case:
    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    offset_groups: int
    weight_groups: int
    use_mask: bool
    use_bias: bool

    @property
    def out_hw(self) -> tuple[int, int]:
        oh = (self.h + 2 * self.padding[0] - self.dilation[0] * (self.kh - 1) - 1) // self.stride[0] + 1
        ow = (self.w + 2 * self.padding[1] - self.dilation[1] * (self.kw - 1) - 1) // self.stride[1] + 1
        return oh, ow

    def conv_kwargs(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


def random_case(seed: int, max_hw: int = 9, max_ch: int = 3) -> Case:
    """Small random geometry; channel counts are built from group counts so every case is valid."""
    rng = random.Random(seed)
    while True:
        go = rng.choice([1, 1, 2])
        gw = rng.choice([1, 1, 2])
        lcm = go * gw // (2 if go == gw == 2 else 1)
        c = lcm * rng.randint(1, max_ch)
        case = Case(
            n=rng.randint(1, 2),
            c=c,
            h=rng.randint(1, max_hw),
            w=rng.randint(1, max_hw),
            o=gw * rng.randint(1, 2),
            kh=rng.randint(1, 3),
            kw=rng.randint(1, 3),
            stride=(rng.randint(1, 2), rng.randint(1, 2)),
            padding=(rng.randint(0, 2), rng.randint(0, 2)),
            dilation=(rng.randint(1, 2), rng.randint(1, 2)),
            offset_groups=go,
            weight_groups=gw,
            use_mask=rng.random() < 0.5,
            use_bias=rng.random() < 0.5,
        )
        if min(case.out_hw) >= 1:
            return case


def make_inputs(
    case: Case, seed: int, dtype: torch.dtype = F64, offset_scale: float = 1.5
) -> dict[str, Optional[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    oh, ow = case.out_hw
    k = case.kh * case.kw

    def rnd(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)

    return {
        "input": rnd(case.n, case.c, case.h, case.w),
        # a few pixels, enough that some taps leave the image (exercises the zero rule)
        "offset": rnd(case.n, 2 * case.offset_groups * k, oh, ow) * offset_scale,
        "weight": rnd(case.o, case.c // case.weight_groups, case.kh, case.kw),
        "bias": rnd(case.o) if case.use_bias else None,
        "mask": torch.rand(case.n, case.offset_groups * k, oh, ow, generator=gen, dtype=F64).to(dtype)
        if case.use_mask
        else None,
    }


def forward_and_grads(
    fn: Callable[..., Tensor], tensors: dict[str, Optional[Tensor]], case: Case, seed: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """Output plus gradients of <output, random cotangent> w.r.t. every tensor argument."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items() if v is not None}
    args = {k: leaves.get(k) for k in tensors}
    out = fn(
        args["input"], args["offset"], args["weight"], args["bias"], mask=args["mask"], **case.conv_kwargs()
    )
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=out.dtype)
    grads = torch.autograd.grad(out, list(leaves.values()), cot)
    return out.detach(), dict(zip(leaves.keys(), grads))


def strategy_fn(strategy: str) -> Callable[..., Tensor]:
    """The internal pure-PyTorch path with a forced evaluation order (plain autograd)."""

    def fn(input, offset, weight, bias, stride, padding, dilation, mask=None):  # type: ignore[no-untyped-def]
        return dc_module.deform_conv2d_torch(
            input, offset, weight, bias, list(stride), list(padding), list(dilation), mask, strategy
        )

    return fn


def assert_close_all(
    actual: tuple[Tensor, dict[str, Tensor]],
    expected: tuple[Tensor, dict[str, Tensor]],
    atol: float,
    rtol: float = 0.0,
    label: str = "",
) -> None:
    out_a, grads_a = actual
    out_e, grads_e = expected
    assert out_a.shape == out_e.shape
    torch.testing.assert_close(out_a, out_e, atol=atol, rtol=rtol, msg=lambda m: f"{label} output: {m}")
    assert grads_a.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(
            grads_a[name], grads_e[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{label} grad {n}: {m}"
        )


# --------------------------------------------------------------------------------------
# numerical equivalence
# --------------------------------------------------------------------------------------
@requires_torchvision
@pytest.mark.parametrize("seed", range(12))
def test_matches_torchvision_forward_and_grads(seed: int) -> None:
    case = random_case(seed)
    tensors = make_inputs(case, seed)
    expected = forward_and_grads(tv_ops.deform_conv2d, tensors, case, seed)
    assert expected[0].abs().max() > 0  # the comparison must be about real numbers
    got = forward_and_grads(deform_conv2d, tensors, case, seed)
    assert_close_all(got, expected, 1e-10, label=f"op {case}")
    for strategy in STRATEGIES:
        got = forward_and_grads(strategy_fn(strategy), tensors, case, seed)
        assert_close_all(got, expected, 1e-10, label=f"{strategy} {case}")


@requires_torchvision
def test_matches_torchvision_float32_large_offsets() -> None:
    """float32 with offsets of several pixels on a non-power-of-two image: the normalised
    grid round trip must not cost more than float32 rounding."""
    case = Case(2, 8, 23, 37, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2, 2, True, True)
    tensors = make_inputs(case, 123, dtype=torch.float32, offset_scale=4.0)
    x, offset, weight, bias, mask = (tensors[k] for k in ("input", "offset", "weight", "bias", "mask"))
    expected = tv_ops.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1)
    for strategy in ("auto",) + STRATEGIES:
        got = strategy_fn(strategy)(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), mask)
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("seed", range(100, 106))
def test_matches_loop_reference(seed: int) -> None:
    case = random_case(seed, max_hw=5, max_ch=2)
    tensors = make_inputs(case, seed)
    expected = forward_and_grads(deform_conv2d_reference, tensors, case, seed)
    assert expected[0].abs().max() > 0
    got = forward_and_grads(deform_conv2d, tensors, case, seed)
    assert_close_all(got, expected, 1e-10, label=f"op {case}")
    for strategy in STRATEGIES:
        got = forward_and_grads(strategy_fn(strategy), tensors, case, seed)
        assert_close_all(got, expected, 1e-10, label=f"{strategy} {case}")


def test_reference_sampling_rule_by_hand() -> None:
    """Pin the bilinear/zero-outside rule itself with hand-computed numbers, so the two
    implementations cannot agree on a shared mistake."""
    image = torch.arange(1.0, 7.0, dtype=F64).reshape(1, 1, 2, 3)  # [[1,2,3],[4,5,6]]
    weight = torch.ones(1, 1, 1, 1, dtype=F64)

    def sample(dy: float, dx: float) -> float:
        offset = torch.tensor([dy, dx], dtype=F64).reshape(1, 2, 1, 1).expand(1, 2, 2, 3)
        ref = deform_conv2d_reference(image, offset, weight)[0, 0, 0, 0].item()
        fast = deform_conv2d(image, offset, weight)[0, 0, 0, 0].item()
        assert fast == pytest.approx(ref, abs=1e-12)
        return ref

    # 1x1 kernel, output pixel (0, 0) samples at (dy, dx)
    assert sample(0.5, 0.5) == pytest.approx((1 + 2 + 4 + 5) / 4)
    assert sample(0.0, 1.25) == pytest.approx(0.75 * 2 + 0.25 * 3)
    assert sample(-0.5, 0.0) == pytest.approx(0.5 * 1)  # upper corner outside -> contributes 0
    assert sample(1.5, 2.5) == pytest.approx(0.25 * 6)  # only one corner inside
    assert sample(-1.0, 0.0) == 0.0  # y <= -1 -> zero
    assert sample(0.0, 3.0) == 0.0  # x >= W -> zero
    assert sample(0.0, 2.999) == pytest.approx(0.001 * 3, abs=1e-9)


def _frac_offsets(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Offsets whose sampling points stay >= 0.2 px from integers, where bilinear
    interpolation has kinks and finite differences are meaningless."""
    integer = torch.randint(-2, 3, shape, generator=gen).to(F64)
    return integer + 0.2 + 0.6 * torch.rand(shape, generator=gen, dtype=F64)


@pytest.mark.parametrize(
    "groups,offset_groups,use_mask",
    [(1, 1, False), (1, 2, True), (2, 1, True), (2, 2, False)],
)
def test_gradcheck(groups: int, offset_groups: int, use_mask: bool) -> None:
    gen = torch.Generator().manual_seed(7 + groups + 3 * offset_groups)
    c = 2 * groups * offset_groups // (2 if groups == offset_groups == 2 else 1)
    n, h, w, o, kh, kw = 1, 4, 5, 2, 2, 2
    stride, padding, dilation = (1, 2), (1, 0), (1, 1)
    oh, ow = (h + 2 - 1 - 1) // 1 + 1, (w - 1 - 1) // 2 + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=F64, requires_grad=True)
    offset = _frac_offsets((n, 2 * offset_groups * kh * kw, oh, ow), gen).requires_grad_()
    weight = torch.randn(o, c // groups, kh, kw, generator=gen, dtype=F64, requires_grad=True)
    bias = torch.randn(o, generator=gen, dtype=F64, requires_grad=True)
    mask = torch.rand(n, offset_groups * kh * kw, oh, ow, generator=gen, dtype=F64, requires_grad=True)

    def fn(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
        return deform_conv2d(
            x, offset, weight, bias, stride, padding, dilation, mask=mask if use_mask else None
        )

    assert torch.autograd.gradcheck(fn, (x, offset, weight, bias, mask))


def test_gradgradcheck() -> None:
    """The backward recomputes a differentiable forward, so second derivatives work too."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 3, 3, generator=gen, dtype=F64, requires_grad=True)
    offset = _frac_offsets((1, 8, 2, 2), gen).requires_grad_()
    weight = torch.randn(2, 2, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    mask = torch.rand(1, 4, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x, o, w, m: deform_conv2d(x, o, w, mask=m), (x, offset, weight, mask)
    )


@pytest.mark.parametrize("strategy", ("auto",) + STRATEGIES)
@pytest.mark.parametrize(
    "kwargs,groups",
    [
        ({"padding": 1}, 1),
        ({"stride": 2, "padding": (2, 1), "dilation": 2}, 1),
        ({"stride": (1, 2), "padding": 1}, 2),
    ],
)
def test_zero_offsets_equal_conv2d(kwargs: dict, groups: int, strategy: str) -> None:
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 9, 10, generator=gen, dtype=F64)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=gen, dtype=F64)
    bias = torch.randn(6, generator=gen, dtype=F64)
    expected = F.conv2d(x, weight, bias, groups=groups, **kwargs)
    offset = torch.zeros(2, 18, *expected.shape[-2:], dtype=F64)
    if strategy == "auto":
        got = deform_conv2d(x, offset, weight, bias, **kwargs)
    else:
        defaults = (("stride", 1), ("padding", 0), ("dilation", 1))
        s, p, d = (dc_module._pair(kwargs.get(k, v), k) for k, v in defaults)
        got = dc_module.deform_conv2d_torch(x, offset, weight, bias, s, p, d, None, strategy)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """out[..., y, x] = x[..., y + dy, x + dx], zero where that falls outside."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        ..., max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)
    ]
    return out


@pytest.mark.parametrize("dy,dx", [(1, 0), (0, -2), (-1, 3), (2, 2)])
def test_integer_offsets_equal_shifted_conv(dy: int, dx: int) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 11, 12, generator=gen, dtype=F64)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=F64)
    expected = F.conv2d(_shift(x, dy, dx), weight, padding=1)
    offset = torch.tensor([float(dy), float(dx)], dtype=F64).repeat(9).reshape(1, 18, 1, 1)
    offset = offset.expand(1, 18, 11, 12).contiguous()
    got = deform_conv2d(x, offset, weight, padding=1)
    # away from the border the shift never meets padding: a conv of the shifted image
    torch.testing.assert_close(got[..., 3:-3, 3:-3], expected[..., 3:-3, 3:-3], atol=1e-10, rtol=0)
    # everywhere: output (oy, ox) reads x[oy - 1 + i + dy, ox - 1 + j + dx], zero outside, i.e.
    # a window of a valid conv over a generously zero-padded image
    big = 4
    full = F.conv2d(F.pad(x, (big, big, big, big)), weight)
    y0, x0 = big - 1 + dy, big - 1 + dx
    torch.testing.assert_close(got, full[..., y0 : y0 + 11, x0 : x0 + 12], atol=1e-10, rtol=0)
    plain = F.conv2d(x, weight, padding=1)
    assert (got - plain).abs().max() > 1e-3  # the shift really changed the result


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype: torch.dtype) -> None:
    case = Case(1, 4, 16, 16, 3, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True, True)
    tensors = make_inputs(case, 9, dtype=F64, offset_scale=3.0)
    expected = deform_conv2d(**{k: v for k, v in tensors.items()}, padding=1)
    low = {k: None if v is None else v.to(dtype) for k, v in tensors.items()}
    got = deform_conv2d(**low, padding=1)
    assert got.dtype == dtype
    tol = 0.05 if dtype == torch.float16 else 0.3
    torch.testing.assert_close(got.to(F64), expected, atol=tol, rtol=0.05)


def test_autocast_runs_in_float32() -> None:
    """Mixed dtypes produced by autocast (bf16 offsets, fp32 weights) are accepted and the op
    computes in float32, like torchvision's autocast kernel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), DeformConv2d(4, 2, 3, padding=1, modulated=True))
    with torch.no_grad():
        model[1].offset_conv.weight.normal_(0.0, 0.3)
    x = torch.randn(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, model(x), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="dtype must match"):  # outside autocast: strict
        deform_conv2d(x, torch.zeros(1, 18, 6, 6, dtype=torch.bfloat16), torch.randn(2, 3, 3, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@requires_torchvision
def test_cuda_matches_torchvision() -> None:  # pragma: no cover - needs a GPU
    case = random_case(3)
    tensors = {k: None if v is None else v.cuda() for k, v in make_inputs(case, 3).items()}
    expected = tv_ops.deform_conv2d(**tensors, **case.conv_kwargs())
    got = deform_conv2d(**tensors, **case.conv_kwargs())
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------------------
# graph capture: one node for the TensorRT plugin to replace
# --------------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 1)
        self.dcn = DeformConv2d(4, 2, 3, padding=1, modulated=True)
        with torch.no_grad():  # non-trivial offsets so the op really deforms
            self.dcn.offset_conv.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.dcn(self.pre(x)))


def _count_op_nodes(graph: torch.fx.Graph) -> int:
    return sum(1 for node in graph.nodes if node.op == "call_function" and OP_TARGET in str(node.target))


def test_export_keeps_single_node() -> None:
    torch.manual_seed(0)
    model = _Tiny().eval()
    x = torch.randn(1, 3, 8, 7)
    ep = torch.export.export(model, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.rtvos.deform_conv2d.default in targets
    assert _count_op_nodes(ep.graph) == 1
    assert not any("grid_sampler" in str(t) for t in targets)
    decomposed = ep.run_decompositions()
    assert _count_op_nodes(decomposed.graph) == 1
    with torch.no_grad():
        torch.testing.assert_close(decomposed.module()(x), model(x), atol=1e-6, rtol=1e-6)


def test_export_dynamic_shapes() -> None:
    """The argument checks and the fake kernel must work on symbolic sizes, so one engine
    can serve several resolutions."""
    torch.manual_seed(0)
    model = _Tiny().eval()
    dims = {0: torch.export.Dim("b", min=1, max=4), 2: torch.export.Dim("h", min=4, max=512),
            3: torch.export.Dim("w", min=4, max=512)}
    # example batch 2: size-1 example dims would be specialised by export
    ep = torch.export.export(model, (torch.randn(2, 3, 8, 7),), dynamic_shapes={"x": dims})
    assert _count_op_nodes(ep.graph) == 1
    x = torch.randn(3, 3, 13, 5)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), atol=1e-6, rtol=1e-6)


def test_compile_fullgraph_single_node_and_matches_eager() -> None:
    """Dynamo must capture the wrapper (argument checks included) without a graph break and
    see exactly one op node; then the real inductor build must agree with eager, forward and
    backward. Kept to one tiny model: inductor on CPU takes seconds."""
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(1, 3, 6, 5)
    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=capture, fullgraph=True)(x)
    assert len(graphs) == 1 and _count_op_nodes(graphs[0].graph) == 1
    torch._dynamo.reset()

    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    expected = model(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grad_c = torch.autograd.grad(out.square().sum(), model.dcn.offset_conv.weight)[0]
    grad_e = torch.autograd.grad(expected.square().sum(), model.dcn.offset_conv.weight)[0]
    assert grad_e.abs().max() > 0
    torch.testing.assert_close(grad_c, grad_e, atol=1e-5, rtol=1e-4)
    torch._dynamo.reset()


def test_fake_kernel_shape() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 4, 17, 13)
        w = torch.empty(5, 2, 3, 2)
        off = torch.empty(2, 24, 8, 7)
        out = torch.ops.rtvos.deform_conv2d.default(x, off, w, None, [2, 2], [0, 1], [1, 2], None)
    assert tuple(out.shape) == (2, 5, 8, 7)


def test_reregistration_is_safe() -> None:
    """Executing the module a second time (reload, a second import path) re-registers the
    op instead of failing, and the op keeps working, autograd included."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 5, generator=gen, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=gen)
    off = torch.randn(1, 18, 3, 3, generator=gen)
    before = deform_conv2d(x, off, w)
    spec = importlib.util.spec_from_file_location("_rtvos_deform_conv_again", dc_module.__file__)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    after = deform_conv2d(x, off, w)
    torch.testing.assert_close(after, before)
    (grad,) = torch.autograd.grad(after.sum(), x)
    assert grad.abs().sum() > 0


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------
def _valid() -> dict[str, Tensor]:
    return {
        "input": torch.randn(2, 4, 6, 6),
        "offset": torch.randn(2, 18, 6, 6),
        "weight": torch.randn(3, 4, 3, 3),
        "mask": torch.rand(2, 9, 6, 6),
    }


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"input": torch.randn(4, 6, 6)}, r"input must be a 4-D tensor.*got ndim 3"),
        ({"weight": torch.randn(3, 4, 3)}, r"weight must be a 4-D tensor.*got ndim 3"),
        ({"weight": torch.randn(3, 3, 3, 3)}, r"multiple of weight.shape\[1\].*got input.shape\[1\]=4"),
        ({"weight": torch.randn(3, 2, 3, 3)}, r"divisible by the 2 weight groups.*got out_channels=3"),
        ({"offset": torch.randn(2, 17, 6, 6)}, r"multiple of 2 \* kernel_h \* kernel_w = 18.*got offset.shape\[1\]=17"),
        ({"offset": torch.randn(2, 54, 6, 6)}, r"divisible by the 3 offset groups.*got input.shape\[1\]=4"),
        ({"offset": torch.randn(2, 18, 5, 6)}, r"offset must have shape.*\(2, 18, 6, 6\), got \(2, 18, 5, 6\)"),
        ({"offset": torch.randn(1, 18, 6, 6)}, r"offset must have shape.*\(2, 18, 6, 6\), got \(1, 18, 6, 6\)"),
        ({"mask": torch.rand(2, 18, 6, 6)}, r"mask must have shape.*\(2, 9, 6, 6\), got \(2, 18, 6, 6\)"),
        ({"mask": torch.rand(2, 9, 6)}, r"mask must be a 4-D tensor"),
        ({"bias": torch.randn(4)}, r"bias must have shape \(3,\).*got \(4,\)"),
        ({"offset": torch.randn(2, 18, 6, 6, dtype=F64)}, r"offset dtype must match input dtype"),
        ({"stride": 0}, r"stride must be positive"),
        ({"padding": (1, 2, 3)}, r"padding must be an int or a pair of ints"),
        ({"dilation": 1.5}, r"dilation must be an int or a pair of ints"),
        ({"input": torch.randn(2, 4, 1, 1), "padding": 0}, r"output size .* is empty"),
    ],
)
def test_argument_errors(change: dict, pattern: str) -> None:
    kwargs: dict = {**_valid(), "padding": 1, **change}
    with pytest.raises(ValueError, match=pattern):
        deform_conv2d(**kwargs)
    with pytest.raises(ValueError, match=pattern):  # the reference shares the checks
        deform_conv2d_reference(**kwargs)


def test_valid_arguments_pass() -> None:
    out = deform_conv2d(**_valid(), padding=1)
    assert out.shape == (2, 3, 6, 6)


# --------------------------------------------------------------------------------------
# DeformConv2d module
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,in_hw,out_shape",
    [
        ({}, (9, 9), (2, 6, 7, 7)),
        ({"padding": 1, "stride": 2}, (9, 8), (2, 6, 5, 4)),
        ({"padding": 2, "dilation": 2, "groups": 2, "offset_groups": 2, "modulated": True}, (7, 7), (2, 6, 7, 7)),
        ({"kernel_size": (3, 1), "padding": (1, 0), "bias": False}, (5, 6), (2, 6, 5, 6)),
    ],
)
def test_module_shapes(kwargs: dict, in_hw: tuple[int, int], out_shape: tuple[int, ...]) -> None:
    m = DeformConv2d(4, 6, **kwargs)
    x = torch.randn(2, 4, *in_hw)
    assert tuple(m(x).shape) == out_shape
    kh, kw = m.kernel_size
    assert tuple(m.offsets(x).shape) == (2, 2 * m.offset_groups * kh * kw, *out_shape[-2:])
    assert m.offset_conv.out_channels == (3 if m.modulated else 2) * m.offset_groups * kh * kw


@pytest.mark.parametrize("groups", [1, 2])
def test_module_at_init_is_plain_conv(groups: int) -> None:
    torch.manual_seed(0)
    m = DeformConv2d(4, 6, 3, stride=1, padding=1, dilation=1, groups=groups).double()
    x = torch.randn(2, 4, 8, 9, dtype=F64)
    assert m.offsets(x).abs().max() == 0
    expected = F.conv2d(x, m.weight, m.bias, padding=1, groups=groups)
    assert expected.abs().max() > 0
    torch.testing.assert_close(m(x), expected, atol=1e-10, rtol=0)


def test_modulated_module_at_init_is_half_conv() -> None:
    """Zero-initialised mask logits give sigmoid(0) = 0.5 on every tap (DCNv2 convention)."""
    torch.manual_seed(0)
    m = DeformConv2d(3, 5, 3, padding=1, modulated=True).double()
    x = torch.randn(1, 3, 6, 6, dtype=F64)
    expected = 0.5 * F.conv2d(x, m.weight, padding=1) + m.bias[None, :, None, None]
    torch.testing.assert_close(m(x), expected, atol=1e-10, rtol=0)


def test_module_offsets_follow_offset_conv_and_receive_gradients() -> None:
    torch.manual_seed(0)
    m = DeformConv2d(3, 4, 3, padding=1, modulated=True)
    x = torch.randn(1, 3, 7, 7)
    m(x).square().sum().backward()
    # the zero-initialised offset branch must still learn (non-zero gradient at zero offsets)
    assert m.offset_conv.weight.grad is not None and m.offset_conv.weight.grad.abs().max() > 0
    with torch.no_grad():
        m.offset_conv.weight.normal_(0.0, 0.2)
        m.offset_conv.bias.normal_(0.0, 0.2)
    raw = m.offset_conv(x)
    torch.testing.assert_close(m.offsets(x), raw[:, :18])
    direct = deform_conv2d(x, raw[:, :18], m.weight, m.bias, padding=1, mask=torch.sigmoid(raw[:, 18:]))
    torch.testing.assert_close(m(x), direct)


def test_module_repr_and_validation() -> None:
    m = DeformConv2d(4, 8, 3, stride=2, padding=1, groups=2, offset_groups=2, bias=False, modulated=True)
    r = repr(m)
    parts = ("4, 8", "kernel_size=(3, 3)", "stride=(2, 2)", "groups=2", "offset_groups=2", "bias=False")
    for part in parts + ("modulated=True",):
        assert part in r
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2d(4, 6, groups=4)
    with pytest.raises(ValueError, match="divisible by offset_groups"):
        DeformConv2d(4, 6, offset_groups=3)


@pytest.mark.parametrize("use_mask,use_bias", [(False, True), (True, False)])
def test_opcheck(use_mask: bool, use_bias: bool) -> None:
    """torch.library.opcheck: schema, fake (meta) kernel, autograd registration and AOT dispatch agree."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 7, generator=gen, requires_grad=True)
    offset = (torch.randn(1, 2 * 9, 6, 7, generator=gen) * 2).requires_grad_()
    weight = torch.randn(3, 4, 3, 3, generator=gen, requires_grad=True)
    bias = torch.randn(3, generator=gen, requires_grad=True) if use_bias else None
    mask = torch.rand(1, 9, 6, 7, generator=gen, requires_grad=True) if use_mask else None
    torch.library.opcheck(torch.ops.rtvos.deform_conv2d.default, (x, offset, weight, bias, [1, 1], [1, 1], [1, 1], mask))
