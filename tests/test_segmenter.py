import numpy as np
import pytest
import torch

from rtvos import Segmenter, create_model
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.io import read_mask
from rtvos.models import resize_flow, warp


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("rpmnet_r18").eval()


@pytest.fixture(scope="module")
def moving_model():
    """A model whose flow is a real displacement (~(2, -1.5) S/4 px), so propagation visibly moves masks."""
    torch.manual_seed(0)
    m = create_model("rpmnet_r18").eval()
    with torch.no_grad():
        m.matching.flow_layer.bias.copy_(torch.tensor([2.0, -1.5]))
    return m


@pytest.fixture(scope="module")
def clip():
    return make_synthetic_clip(num_frames=6, height=96, width=120, num_objects=2, seed=3)


class CountingModel(torch.nn.Module):
    """Wraps a model to count embed calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.embeds = inner, 0
        self.config, self.meta = inner.config, inner.meta

    def embed(self, x):
        self.embeds += 1
        return self.inner.embed(x)

    def match(self, a, b, prior=None):
        return self.inner.match(a, b, prior)


def run(seg, clip, first=None):
    out = [seg.step(clip.frames[0], clip.masks[0] if first is None else first)]
    out += [seg.step(f) for f in clip.frames[1:]]
    return out


def test_cached_equals_uncached_and_embeds_once_per_frame(moving_model, clip):
    counted = CountingModel(moving_model)
    cached = run(Segmenter(counted, size=64, backend="eager"), clip)
    assert counted.embeds == len(clip.frames)
    counted.embeds = 0
    uncached = run(Segmenter(counted, size=64, cache_embeddings=False, backend="eager"), clip)
    assert counted.embeds == 2 * len(clip.frames) - 1
    for a, b in zip(cached, uncached):
        assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(cached[-1].mask, clip.masks[0])  # the masks really moved


def test_step_result_fields(model, clip):
    seg = Segmenter(model, size=64)
    r0 = seg.step(clip.frames[0], clip.masks[0])
    assert r0.anchored and r0.frame_index == 0 and r0.flow is None
    assert np.array_equal(r0.mask, clip.masks[0]) and r0.mask is not clip.masks[0]
    r1 = seg.step(clip.frames[1])
    assert r1.frame_index == 1 and not r1.anchored
    assert r1.mask.shape == clip.frames[1].shape[:2] and r1.mask.dtype == np.uint8
    assert r1.flow.shape == (1, 2, 16, 16)
    assert {"preprocess", "propagate", "appearance", "postprocess"} <= set(r1.timings_ms)
    assert {"embed", "match"} <= set(r1.timings_ms) or "embed_match" in r1.timings_ms  # fused backends


def test_propagation_is_the_warped_argmax(moving_model, clip):
    """The returned mask equals argmax of the one-hot previous mask warped by f4 upsampled to the frame."""
    seg = Segmenter(moving_model, size=64, appearance="none")
    seg.step(clip.frames[0], clip.masks[0])
    r = seg.step(clip.frames[1])
    ids = np.array(r.object_ids)
    lut = np.zeros(256, np.int64)
    lut[ids] = np.arange(len(ids))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lut[clip.masks[0]]), len(ids)).permute(2, 0, 1)[None].float()
    expected = ids[warp(onehot, resize_flow(r.flow, clip.masks[0].shape))[0].argmax(0).numpy()]
    assert np.array_equal(r.mask, expected)
    assert (r.mask != clip.masks[0]).mean() > 0.01  # a non-trivial warp, so an identity would fail
    # dy ≈ +2 S/4 px → the mask moves up by ≈ 2 * 4 * 96/64 = 12 frame px: its centroid rises.
    ys = np.nonzero(clip.masks[0])[0].mean(), np.nonzero(r.mask)[0].mean()
    assert ys[1] < ys[0] - 5


def test_multi_object_noncontiguous_ids(model):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)
    mask = np.zeros((70, 90), np.uint8)
    mask[5:30, 5:40], mask[40:65, 10:50], mask[10:60, 60:85] = 3, 17, 200
    seg = Segmenter(model, size=64)
    assert seg.step(frame, mask).object_ids == (0, 3, 17, 200)
    r = seg.step(frame)
    assert set(np.unique(r.mask)) <= {0, 3, 17, 200}
    # Same frame twice with a near-zero initial flow: the mask survives almost unchanged.
    assert (r.mask == mask).mean() > 0.97


def test_model_resolution_mode_and_reanchor(model, clip):
    seg = Segmenter(model, size=64, mask_resolution="model")
    seg.step(clip.frames[0], clip.masks[0])
    r = seg.step(clip.frames[1])
    assert r.mask.shape == clip.masks[0].shape
    re = seg.step(clip.frames[2], clip.masks[2])
    assert re.anchored and np.array_equal(re.mask, clip.masks[2]) and re.frame_index == 2


def test_errors(model, clip):
    seg = Segmenter(model, size=64)
    f = clip.frames[0]
    with pytest.raises(RuntimeError, match="no mask yet"):
        seg.step(f)
    with pytest.raises(ValueError, match="does not match frame shape"):
        seg.step(f, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="must be uint8"):
        seg.step(f.astype(np.float32), clip.masks[0])
    with pytest.raises(ValueError, match="H×W×3 RGB"):
        seg.step(f[..., :1], clip.masks[0])
    with pytest.raises(ValueError, match="mask must be uint8"):
        seg.step(f, clip.masks[0].astype(np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        seg.step(torch.zeros(4, 4, 3), clip.masks[0])
    seg.step(f, clip.masks[0])
    with pytest.raises(ValueError, match="frame size changed"):
        seg.step(np.zeros((40, 40, 3), np.uint8))
    seg.reset()
    with pytest.raises(RuntimeError, match="no mask yet"):
        seg.step(f)
    with pytest.raises(ValueError, match="multiple of 64"):
        Segmenter(model, size=100)
    with pytest.raises(ValueError, match="unknown backend"):
        Segmenter(model, size=64, backend="nope")


def test_memory_flat_state(model, clip):
    """Nothing in the state grows with the frame count: only frame t−1 is kept."""
    seg = Segmenter(model, size=64)
    run(seg, clip)
    st = seg.state
    assert st.prev_input is None and st.prev_embedding.shape == (1, 32, 16, 16)
    assert st.labels.shape == clip.masks[0].shape


def test_shipped_sample_mask_reads():
    from rtvos.data.sample import sample_clip_paths as sample_paths

    video, mask = sample_paths()
    ids, palette = read_mask(mask)
    assert video.stat().st_size < 5_000_000 and ids.shape == (480, 640) and set(np.unique(ids)) == {0, 1}


def test_default_size_comes_from_the_checkpoint(tmp_path):
    from rtvos.models import load_checkpoint, save_checkpoint

    m = create_model("rpmnet_r18")
    assert Segmenter(m).size == (512, 512)  # untrained: the paper's S
    trained = load_checkpoint(save_checkpoint(m, tmp_path / "m.pt", meta={"size": 128}))
    assert Segmenter(trained).size == (128, 128)
    assert Segmenter(trained, size=64).size == (64, 64)  # an explicit size wins


@pytest.mark.parametrize("num_classes", [2, 3, 6])
def test_cpu_remap_fast_path_matches_the_torch_reference(num_classes):
    """The CPU path (cv2.remap on a uint8 one-hot) must agree with grid_sample's warp + argmax."""
    from rtvos.segmenter import RemapPropagator, propagate_labels

    rng = np.random.default_rng(num_classes)
    h, w = 120, 212
    labels = np.zeros((h, w), np.int64)
    for k in range(1, num_classes):  # overlapping rectangles, some touching the border
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        labels[y : y + rng.integers(15, 70), x : x + rng.integers(15, 90)] = k
    # Smooth random flow up to ~6 px at S/4 = 32×32, so many pixels sample outside the image near the edges.
    coarse = torch.from_numpy(rng.normal(0, 3, (1, 2, 4, 4)).astype(np.float32))
    flow = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    ref = propagate_labels(torch.from_numpy(labels), flow, num_classes).numpy()
    p = RemapPropagator()
    fast = p.hard(labels, p.maps(h, w, flow), num_classes)
    assert fast.shape == ref.shape
    agree = (fast == ref).mean()
    assert agree >= 0.998, agree
    for k in range(num_classes):  # and per object: IoU ≥ 0.99
        a, b = fast == k, ref == k
        if b.sum() > 50:
            assert (a & b).sum() / (a | b).sum() >= 0.99
    assert (fast != labels).mean() > 0.02  # the flow really moved things: an identity path would fail
