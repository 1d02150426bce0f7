"""Issue #11: aspect-preserving geometry, soft propagation, the DIS baseline through the shared propagator,
prior (rpmnet_dis) models, and the local-correlation op."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rtvos import Segmenter, create_model
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.flow import FLOW_PRESETS, DISFlow, field_to_grid, to_gray
from rtvos.models import resize_flow, warp
from rtvos.ops import local_correlation
from rtvos.propagation import onehot_scores
from rtvos.segmenter import labels_from_scores, model_input_size, propagate_labels, propagate_scores


@pytest.fixture(scope="module")
def clip():
    return make_synthetic_clip(num_frames=8, height=96, width=160, num_objects=2, seed=5)


@pytest.fixture(scope="module")
def moving_model():
    torch.manual_seed(0)
    m = create_model("rpmnet_r18").eval()
    with torch.no_grad():
        m.matching.flow_layer.bias.copy_(torch.tensor([0.37, -0.43]))  # fractional: real interpolation
    return m


@pytest.fixture(scope="module")
def prior_model():
    torch.manual_seed(0)
    m = create_model("rpmnet_dis_r18_w50").eval()
    with torch.no_grad():  # a visible residual on top of the prior
        m.matching.flow_layer.bias.copy_(torch.tensor([0.5, -0.75]))
    return m


# -- geometry -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frame_hw, size, want",
    [((480, 854), 128, (128, 256)), ((480, 854), 192, (192, 320)), ((854, 480), 128, (256, 128)),
     ((480, 640), 128, (128, 192)), ((100, 100), 64, (64, 64)), ((10, 1000), 64, (64, 6400)),
     ((480, 854), (128, 192), (128, 192))],
)
def test_model_input_size_keeps_aspect(frame_hw, size, want):
    assert model_input_size(frame_hw, size) == want


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of 64"):
        model_input_size((480, 854), 100)
    with pytest.raises(ValueError, match="multiple of 64"):
        Segmenter(create_model("rpmnet_r18"), size=(64, 100))


def test_segmenter_runs_non_square_input(moving_model, clip):
    seg = Segmenter(moving_model, size=64)
    res = seg.step(clip.frames[0], clip.masks[0])
    assert seg.size == (64, 128)  # 96×160 frames: short side 64, long side 106.7 → 128
    res = seg.step(clip.frames[1])
    assert res.mask.shape == clip.masks[0].shape
    assert res.flow is not None and tuple(res.flow.shape) == (1, 2, 16, 32)


# -- soft propagation -----------------------------------------------------------------------------------------
def test_soft_equals_hard_for_one_hot_scores(moving_model, clip):
    """One step from a given (one-hot) mask: soft and hard propagation pick the same labels."""
    hard = Segmenter(moving_model, size=64, propagation="hard")
    soft = Segmenter(moving_model, size=64, propagation="soft", appearance="none")
    for seg in (hard, soft):
        seg.step(clip.frames[0], clip.masks[0])
    a, b = hard.step(clip.frames[1]), soft.step(clip.frames[1])
    assert a.scores is None and b.scores is not None
    # hard uses 8-bit remapped scores, soft float32: they may only differ on exact ties at boundaries
    assert (a.mask == b.mask).mean() > 0.999
    assert np.abs(a.mask.astype(int) - clip.masks[0]).sum() > 0  # the field really moved the mask
    s = b.scores
    assert s.shape == (3, *clip.masks[0].shape)
    np.testing.assert_allclose(s.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels_from_scores(b.object_scores), np.searchsorted([0, *b.object_ids[1:]], b.mask))


def test_soft_propagation_matches_torch_reference(moving_model, clip):
    """The remap fast path equals `propagate_scores` (grid_sample) over several frames."""
    seg = Segmenter(moving_model, size=64, propagation="soft", appearance="none")
    seg.step(clip.frames[0], clip.masks[0])
    ref = torch.from_numpy(seg.state.scores.copy())
    for f in clip.frames[1:4]:
        res = seg.step(f)
        field = resize_flow(res.flow, clip.masks[0].shape)
        ref = propagate_scores(ref, field)
        d = np.abs(res.object_scores - ref.numpy())
        assert d.max() < 0.05 and d.mean() < 2e-3  # remap's 1/32-px fixed-point coordinates, at edges only
        assert (labels_from_scores(ref.numpy()) == labels_from_scores(res.object_scores)).mean() > 0.995


def test_soft_differs_from_hard_over_frames(moving_model, clip):
    """Carrying scores is not re-binarising: after a few frames the two disagree somewhere."""
    outs = {}
    for mode in ("soft", "hard"):
        seg = Segmenter(moving_model, size=64, propagation=mode, appearance="none")
        seg.step(clip.frames[0], clip.masks[0])
        outs[mode] = [seg.step(f).mask for f in clip.frames[1:]]
    assert any((a != b).any() for a, b in zip(outs["soft"], outs["hard"]))


def test_zero_outside_gives_background():
    """A field that samples from outside the frame yields background, in soft and hard modes."""
    labels = torch.ones(8, 10, dtype=torch.uint8)  # everything is object 1
    field = torch.zeros(1, 2, 8, 10)
    field[:, 1] = 20.0  # every pixel looks 20 px to the right: outside a 10-px-wide frame
    assert int(propagate_labels(labels, field, 2).max()) == 0
    sc = propagate_scores(torch.ones(1, 8, 10), field)
    assert float(sc.max()) == 0.0
    assert labels_from_scores(sc.numpy()).max() == 0
    # the same through the Segmenter's remap path: a DIS-free check with a hand-made field
    from rtvos.segmenter import RemapPropagator

    p = RemapPropagator()
    base = np.zeros((8, 10, 2), np.float32)
    base[..., 0] = 20.0
    maps = p.maps(8, 10, None, base)
    assert p.soft(np.ones((1, 8, 10), np.float32), maps).max() == 0.0
    assert p.hard(np.ones((8, 10), np.uint8), maps, 2).max() == 0


def test_partially_outside_mass_goes_to_background():
    """Half a pixel outside: the object keeps half its score, the background takes the rest."""
    sc = propagate_scores(torch.ones(1, 4, 4), torch.tensor([0.0, 0.5]).view(1, 2, 1, 1).expand(1, 2, 4, 4))
    assert abs(float(sc[0, 0, -1]) - 0.5) < 1e-6  # the last column samples x = 3.5: half inside
    assert labels_from_scores(sc.numpy())[0, -1] == 0  # a 0.5/0.5 tie goes to the background


# -- the DIS baseline through the shared propagator ----------------------------------------------------------
def _reference_flow_propagation(frames, first, preset):
    """Independent implementation: DIS backward field, float one-hot maps of the objects warped with
    cv2.remap on float maps (zero border), background = 1 − sum, argmax."""
    dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[preset].base)
    if FLOW_PRESETS[preset].finest_scale is not None:
        dis.setFinestScale(FLOW_PRESETS[preset].finest_scale)
    ids = np.union1d([0], np.unique(first))
    scores = np.stack([(first == i).astype(np.float32) for i in ids[1:]])
    h, w = first.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    prev = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    out = []
    for f in frames[1:]:
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        fl = dis.calc(g, prev, None)
        scores = np.stack([cv2.remap(s, gx + fl[..., 0], gy + fl[..., 1], cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0) for s in scores])
        full = np.concatenate((1 - scores.sum(0, keepdims=True), scores))
        out.append(ids[full.argmax(0)].astype(np.uint8))
        prev = g
    return out


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])
def test_flow_method_matches_independent_reference(clip, preset):
    seg = Segmenter(None, flow_preset=preset, appearance="none")
    seg.step(clip.frames[0], clip.masks[0])
    ours = [seg.step(f).mask for f in clip.frames[1:]]
    ref = _reference_flow_propagation(clip.frames, clip.masks[0], preset)
    for a, b in zip(ours, ref):
        assert (a == b).mean() > 0.998  # fixed-point (1/32 px) vs float remap coordinates
    assert (ours[-1] != clip.masks[0]).mean() > 0.01  # the objects moved, and the masks followed


def test_flow_method_follows_the_objects(clip):
    """Against the synthetic ground truth, DIS through the propagator beats copying the first mask."""
    seg = Segmenter(None, flow_preset="medium")
    seg.step(clip.frames[0], clip.masks[0])
    last = [seg.step(f).mask for f in clip.frames[1:]][-1]
    gt = clip.masks[-1]
    iou = lambda a, b: ((a > 0) & (b > 0)).sum() / max(1, ((a > 0) | (b > 0)).sum())  # noqa: E731
    assert iou(last, gt) > iou(clip.masks[0], gt) + 0.1


def test_flow_segmenter_argument_errors(moving_model):
    with pytest.raises(ValueError, match="flow_preset"):
        Segmenter(None)
    with pytest.raises(ValueError, match="unknown|flow_preset"):
        Segmenter(None, flow_preset="nope")
    with pytest.raises(ValueError, match="flow_preset"):
        Segmenter(moving_model, flow_preset="medium")
    with pytest.raises(ValueError, match="propagation"):
        Segmenter(moving_model, propagation="fuzzy")


# -- prior models ---------------------------------------------------------------------------------------------
def test_prior_model_refines_the_dis_field(prior_model, clip):
    """The model returns the residual; the full-resolution field is DIS + the upsampled residual."""
    seg = Segmenter(prior_model, size=64, appearance="none", backend="eager")
    seg.step(clip.frames[0], clip.masks[0])
    res = seg.step(clip.frames[1])
    assert res.timings_ms.get("flow", 0) >= 0 and "match" in res.timings_ms
    dis = DISFlow(prior_model.config.prior)(to_gray(clip.frames[1]), to_gray(clip.frames[0]))
    residual = res.flow
    assert float(residual.abs().mean()) > 0.1  # the residual is the bias set above
    # rebuild the mask with the reference propagator from DIS + upsampled residual
    field = resize_flow(residual, clip.masks[0].shape) + torch.from_numpy(dis[..., ::-1].copy()).permute(2, 0, 1)[None]
    first = torch.from_numpy(onehot_scores(np.searchsorted([0, 1, 2], clip.masks[0]), 3))
    want = labels_from_scores(propagate_scores(first, field).numpy())
    got = np.searchsorted([0, *res.object_ids[1:]], res.mask)
    assert (want == got).mean() > 0.995


def test_prior_model_requires_its_prior(prior_model):
    e = torch.zeros(1, 32, 8, 8)
    with pytest.raises(ValueError, match="prior"):
        prior_model.match(e, e)
    with pytest.raises(ValueError, match="prior"):
        prior_model.match(e, e, torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="no prior"):
        create_model("rpmnet_r18").match(e, e, torch.zeros(1, 2, 8, 8))


def test_prior_model_zero_residual_is_the_prior():
    """Before training (residual ≈ 0) a prior model propagates like DIS through the same propagator."""
    torch.manual_seed(0)
    m = create_model("rpmnet_dis_r18_w50").eval()
    with torch.no_grad():
        m.matching.flow_layer.weight.zero_()
        m.matching.flow_layer.bias.zero_()
    clip = make_synthetic_clip(num_frames=5, height=96, width=160, num_objects=1, seed=2)
    a, b = Segmenter(m, size=64), Segmenter(None, flow_preset=m.config.prior)
    for s in (a, b):
        s.step(clip.frames[0], clip.masks[0])
    for f in clip.frames[1:]:
        assert (a.step(f).mask == b.step(f).mask).mean() > 0.999


@pytest.mark.parametrize("backend", ["onnx", "compile"])
def test_prior_model_backend_parity_non_square(prior_model, clip, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("RTVOS_CACHE", str(tmp_path))
    from rtvos.backends import backend_status

    if not backend_status()[backend].startswith("available"):
        pytest.skip(f"{backend}: {backend_status()[backend]}")
    eager, other = Segmenter(prior_model, size=64), Segmenter(prior_model, size=64, backend=backend)
    for s in (eager, other):
        s.step(clip.frames[0], clip.masks[0])
    for f in clip.frames[1:4]:
        a, b = eager.step(f), other.step(f)
        assert torch.allclose(a.flow, b.flow, atol=1e-3), float((a.flow - b.flow).abs().max())
        assert (a.mask == b.mask).mean() > 0.999
    assert other.size == (64, 128)


# -- local correlation ----------------------------------------------------------------------------------------
def _corr_reference(a, b, r):
    n, c, h, w = a.shape
    out = torch.zeros(n, (2 * r + 1) ** 2, h, w, dtype=a.dtype)
    k = 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            for y in range(h):
                for x in range(w):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, k, y, x] = (a[:, :, y, x] * b[:, :, yy, xx]).mean(1)
            k += 1
    return out


@pytest.mark.parametrize("r", [0, 1, 2])
def test_correlation_matches_slow_reference(r):
    g = torch.Generator().manual_seed(r)
    a, b = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(local_correlation(a, b, r), _corr_reference(a, b, r))


def test_correlation_gradients():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: local_correlation(x, y, 2), (a, b))
    # and the gradient equals the reference's
    ga = torch.autograd.grad(local_correlation(a, b, 1).square().sum(), (a, b))
    gr = torch.autograd.grad(_corr_reference(a, b, 1).square().sum(), (a, b))
    for x, y in zip(ga, gr):
        torch.testing.assert_close(x, y)


def test_correlation_argument_errors():
    a = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="same shape|one shape"):
        local_correlation(a, torch.zeros(1, 2, 3, 4), 1)
    with pytest.raises(ValueError, match="radius"):
        local_correlation(a, a, -1)
    with pytest.raises(ValueError, match="radius"):
        local_correlation(a, a, True)


def test_correlation_exports_to_plain_onnx_ops(tmp_path):
    """Traced as intended: standard ONNX ops only (no custom domain), and equal to eager under onnxruntime."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class M(torch.nn.Module):
        def forward(self, a, b):
            return local_correlation(a, b, 2)

    a, b = torch.randn(1, 4, 6, 7), torch.randn(1, 4, 6, 7)
    path = tmp_path / "corr.onnx"
    torch.onnx.export(M().eval(), (a, b), str(path), dynamo=True, input_names=["a", "b"], output_names=["c"])
    proto = onnx.load(str(path))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a.numpy(), "b": b.numpy()})[0]
    np.testing.assert_allclose(out, local_correlation(a, b, 2).numpy(), atol=1e-5)
    compiled = torch.compile(M(), fullgraph=True)
    torch.testing.assert_close(compiled(a, b), local_correlation(a, b, 2))


def test_warp_equals_d4_convention_for_prior_grid():
    """The prior is resized into the model's (dy, dx) layout: a pure x-shift field stays a pure x-shift."""
    f = np.zeros((40, 80, 2), np.float32)
    f[..., 0] = 8.0  # dx = 8 frame px
    g = torch.from_numpy(field_to_grid(f, (10, 20)))[None]
    assert torch.allclose(g[0, 1], torch.full((10, 20), 2.0)) and torch.allclose(g[0, 0], torch.zeros(10, 20))
    x = torch.arange(20.0).view(1, 1, 1, 20).expand(1, 1, 10, 20)
    assert torch.allclose(warp(x, g)[0, 0, :, :10], x[0, 0, :, 2:12])


# -- convex upsampling ----------------------------------------------------------------------------------------
def _convex_reference(up, flow, guide):
    n, _, h, w = flow.shape
    k = up.factor
    logits = up.head(torch.cat((guide, flow), 1))  # n×(9k²)×h×w, ordered (neighbour, ky, kx)
    out = torch.zeros(n, 2, h * k, w * k, dtype=flow.dtype)
    for y in range(h):
        for x in range(w):
            for ky in range(k):
                for kx in range(k):
                    wts = torch.stack([logits[:, (t * k + ky) * k + kx, y, x] for t in range(9)], 1).softmax(1)
                    acc = torch.zeros(n, 2, dtype=flow.dtype)
                    for t in range(9):
                        yy = min(max(y + t // 3 - 1, 0), h - 1)
                        xx = min(max(x + t % 3 - 1, 0), w - 1)
                        acc += wts[:, t : t + 1] * flow[:, :, yy, xx] * k
                    out[:, :, y * k + ky, x * k + kx] = acc
    return out


def test_convex_upsampling_matches_slow_reference_and_gradcheck():
    from rtvos.models.rpmnet import ConvexUpsample

    torch.manual_seed(0)
    up = ConvexUpsample(3, 2).double()
    flow, guide = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 3, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(up(flow, guide), _convex_reference(up, flow, guide))
    flow.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: up(f, guide), (flow,))
    const = torch.full((1, 2, 3, 4), 0.7, dtype=torch.float64)  # a convex combination of equal values
    torch.testing.assert_close(up(const, guide), torch.full((1, 2, 6, 8), 1.4, dtype=torch.float64))


def test_convex_model_residual_on_input_grid(clip):
    torch.manual_seed(0)
    m = create_model("rpmnet_dis_r18_w50_cu").eval()
    seg = Segmenter(m, size=64)
    seg.step(clip.frames[0], clip.masks[0])
    res = seg.step(clip.frames[1])
    assert tuple(res.flow.shape) == (1, 2, 64, 128)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 5), (31, 40)])
@pytest.mark.parametrize("kind", ["flow", "prior", "paper-hard", "paper-soft"])
def test_tiny_frames_work(hw, kind):
    """Issue #13.4: frames of any size ≥ 1×1 (DIS is padded; the hard path no longer uses cv2.compare)."""
    rng = np.random.default_rng(0)
    frame, mask = rng.integers(0, 255, (*hw, 3), dtype=np.uint8), np.ones(hw, np.uint8)
    seg = {
        "flow": lambda: Segmenter(None, flow_preset="ultrafast-fine"),
        "prior": lambda: Segmenter(create_model("rpmnet_dis_r18_w50_cu"), size=64),
        "paper-hard": lambda: Segmenter(create_model("rpmnet_r18"), size=64, propagation="hard"),
        "paper-soft": lambda: Segmenter(create_model("rpmnet_r18"), size=64),
    }[kind]()
    seg.step(frame, mask)
    for _ in range(2):
        assert seg.step(frame).mask.shape == hw


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_labels_from_scores_is_the_argmax_with_background_first(k):
    """The running argmax equals np.argmax over (1 − sum, scores), ties included (the first maximum wins)."""
    rng = np.random.default_rng(k)
    s = rng.uniform(0, 1.0 / max(k, 1), (k, 30, 40)).astype(np.float32)
    if k:
        s[:, :5] = np.float32(0.25)  # exact ties between objects (and with the background when k = 3)
    full = np.concatenate((1.0 - s.sum(0, keepdims=True), s), 0)
    want = full.argmax(0).astype(np.uint8) if k != 1 else (s[0] > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(labels_from_scores(s), want)
