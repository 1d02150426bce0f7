"""The appearance stage (rtvos.appearance): behaviour on scripted scenes, and the vectorised code against slow
per-pixel references."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from rtvos import Segmenter, load_model
from rtvos.appearance import (
    AppearanceGrid,
    GridConfig,
    fb_confidence,
    fb_consistency,
    fuse_scores,
)
from rtvos.data.synthetic import make_scene_clip
from rtvos.flow import DISFlow, to_gray
from rtvos.propagation import RemapPropagator, labels_from_scores

RED, BLUE, YELLOW = (200, 40, 40), (50, 80, 220), (230, 210, 40)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def _run(clip, **kw):
    seg = Segmenter(load_model("default"), **kw)
    return seg, [seg.step(f, m if t == 0 else None).mask for t, (f, m) in enumerate(zip(clip.frames, clip.masks))]


# -- behaviour ---------------------------------------------------------------------------------------------------
def test_object_recovered_after_passing_behind_an_occluder():
    clip = make_scene_clip([((20, 60), (170, 60), 12)], [RED], num_frames=48, occluders=[(80, 0, 120, 120)])
    hidden = [t for t, m in enumerate(clip.masks) if not m.any()]
    assert hidden and hidden[-1] < 40  # the object is fully hidden for a while, then visible again
    _, with_app = _run(clip, appearance="grid")
    _, without = _run(clip, appearance="none")
    tail = range(len(clip.frames) - 6, len(clip.frames))
    assert min(_iou(with_app[t] == 1, clip.masks[t] == 1) for t in tail) > 0.8
    assert max(_iou(without[t] == 1, clip.masks[t] == 1) for t in tail) < 0.2


def test_redetection_reseeds_an_object_that_reappears_far_away():
    # A wide occluder: the object re-emerges 120 px from where the flow lost it.
    clip = make_scene_clip([((16, 60), (184, 60), 12)], [RED], num_frames=48, occluders=[(40, 0, 160, 120)])
    hidden = [t for t, m in enumerate(clip.masks) if not m.any()]
    area0 = (clip.masks[0] > 0).sum()
    back = next(t for t in range(hidden[-1], len(clip.masks)) if (clip.masks[t] > 0).sum() > 0.3 * area0)

    def first_good(**kw):
        seg, masks = _run(clip, **kw)
        good = [t for t in range(back, len(masks)) if _iou(masks[t] == 1, clip.masks[t] == 1) > 0.5]
        return (good[0] if good else math.inf), seg

    t_redetect, seg = first_good()
    assert seg.state.appearance is not None and seg.state.appearance.redetected >= 1
    t_without, _ = first_good(appearance_config=GridConfig(lost_ratio=0.0))
    assert t_redetect <= back + 2
    assert t_without > t_redetect


def test_three_objects_never_swap_ids_when_two_cross():
    clip = make_scene_clip([((25, 60), (175, 60), 14), ((175, 66), (25, 66), 14), ((100, 20), (100, 22), 12)],
                           [RED, BLUE, YELLOW], num_frames=40)
    assert any(0 < (m == 1).sum() < (clip.masks[0] == 1).sum() * 0.9 for m in clip.masks)  # 2 passes over 1
    seg, masks = _run(clip)
    for t, (pred, gt) in enumerate(zip(masks, clip.masks)):
        for k in (1, 2, 3):
            own = _iou(pred == k, gt == k)
            others = max(_iou(pred == k, gt == j) for j in (1, 2, 3) if j != k)
            assert own >= others, f"frame {t}: object {k} looks more like another object"
    assert min(_iou(masks[-1] == k, clip.masks[-1] == k) for k in (1, 2, 3)) > 0.5
    assert seg.state.ids is not None and seg.state.ids.as_tuple() == (0, 1, 2, 3)


def test_appearance_none_is_plain_soft_propagation():
    """appearance="none" is exactly DIS + the soft remap propagator + argmax, computed independently here."""
    clip = make_scene_clip([((30, 60), (120, 50), 14), ((150, 80), (100, 70), 10)], [RED, BLUE], num_frames=8)
    seg, masks = _run(clip, appearance="none")
    dis, remap = DISFlow("ultrafast-fine"), RemapPropagator()
    first = clip.masks[0]
    scores = np.stack([(first == k).astype(np.float32) for k in (1, 2)])
    prev = to_gray(clip.frames[0])
    for t in range(1, len(clip.frames)):
        gray = to_gray(clip.frames[t])
        field = dis(gray, prev)
        scores = remap.soft(scores, remap.maps(*gray.shape, None, field))
        prev = gray
        np.testing.assert_array_equal(masks[t], labels_from_scores(scores))


def test_state_memory_is_bounded_and_reanchoring_resets_it():
    clip = make_scene_clip([((20, 60), (170, 60), 12)], [RED], num_frames=30)
    seg = Segmenter(load_model("default"))
    sizes = []
    for t, (f, m) in enumerate(zip(clip.frames, clip.masks)):
        seg.step(f, m if t == 0 else None)
        seg.appearance_stage.wait(seg.state.appearance)  # type: ignore[union-attr, arg-type]
        sizes.append(seg.state.appearance.nbytes)  # type: ignore[union-attr]
    assert len(set(sizes[5:])) == 1  # once the recent counts exist (first update), nothing grows with time
    seg.step(clip.frames[5], clip.masks[5])  # re-anchor
    assert seg.state.appearance.updates == 0 and seg.state.appearance.recent is None  # type: ignore[union-attr]


def test_misuse_raises():
    with pytest.raises(ValueError, match="appearance must be one of"):
        Segmenter(load_model("default"), appearance="colour")
    with pytest.raises(ValueError, match="propagation='soft'"):
        Segmenter(load_model("default"), propagation="hard", appearance="grid")
    assert Segmenter(load_model("default"), propagation="hard").appearance == "none"  # the default where it applies
    assert Segmenter(load_model("default")).appearance == "grid"
    for bad in (dict(decay=1.5), dict(bits=(3, 3)), dict(cell=0), dict(fb_preset="fastest"), dict(eps=0.6)):
        with pytest.raises(ValueError):
            GridConfig(**bad)  # type: ignore[arg-type]


# -- the vectorised code against slow references -----------------------------------------------------------------
def _slow_counts(grid: AppearanceGrid, frame: np.ndarray, labels: np.ndarray, k1: int, coords: np.ndarray,
                 work: tuple[int, int]) -> dict[tuple[int, int, int], float]:
    """(bin, class) → count, pixel by pixel, then the [1 2 1] blur over the five grid axes by explicit loops."""
    c = grid.config
    h, w = work
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    yuv = cv2.cvtColor(small, cv2.COLOR_RGB2YUV)
    onehot = [cv2.resize((labels == k).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) for k in range(k1)]
    gy, gx = -(-frame.shape[0] // c.cell), -(-frame.shape[1] // c.cell)
    nb = [1 << b for b in c.bits]
    raw = np.zeros((gy, gx, *nb, k1))
    for y in range(h):
        for x in range(w):
            cy = min(max(int(coords[y, x, 1] / c.cell), 0), gy - 1)
            cx = min(max(int(coords[y, x, 0] / c.cell), 0), gx - 1)
            bins = [int(yuv[y, x, i]) >> (8 - c.bits[i]) for i in range(3)]
            for k in range(k1):
                raw[(cy, cx, *bins, k)] += onehot[k][y, x]
    out = raw
    for ax in range(5):
        nxt = 0.5 * out
        n = out.shape[ax]
        for i in range(n):
            sl = [slice(None)] * 6
            sl[ax] = i
            if i > 0:
                src = [slice(None)] * 6
                src[ax] = i - 1
                nxt[tuple(sl)] += 0.25 * out[tuple(src)]
            if i < n - 1:
                src = [slice(None)] * 6
                src[ax] = i + 1
                nxt[tuple(sl)] += 0.25 * out[tuple(src)]
        out = nxt
    return out


def test_grid_model_and_fusion_match_slow_reference():
    rng = np.random.default_rng(3)
    frame = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (48, 40), interpolation=cv2.INTER_LINEAR)
    labels = np.zeros((40, 48), np.uint8)
    labels[8:24, 10:30] = 1
    labels[26:36, 30:44] = 2
    cfg = GridConfig(cell=16, bits=(2, 2, 2), scale=2)
    grid = AppearanceGrid(cfg)
    st = grid.init(frame, labels, 3)
    h, w = st.work_size
    ref = _slow_counts(grid, frame, labels, 3, st.coords[1::2, 1::2][:h, :w], st.work_size)
    np.testing.assert_allclose(np.moveaxis(st.anchor.reshape(3, *ref.shape[:-1]), 0, -1), ref, rtol=1e-5, atol=1e-6)
    # The table: per cell, Dirichlet-smoothed p(colour | class); factor = clip(p_k / p_0, e^±clip)^β.
    nc = cfg.colours
    counts = ref.reshape(-1, nc, 3)
    p = (counts + cfg.prior) / (counts.sum(1, keepdims=True) + cfg.prior * nc)
    want = np.clip(p[..., 1:] / p[..., :1], math.exp(-cfg.llr_clip), math.exp(cfg.llr_clip)) ** cfg.beta
    np.testing.assert_allclose(st.table, want.reshape(-1, 2).T, rtol=1e-5)
    # Fusion, pixel by pixel: s_k ∝ p_k · f_k with p the eps-floored, FB-shrunk prior and f_0 = 1.
    scores = rng.uniform(0, 0.5, (2, 40, 48)).astype(np.float32)
    factors = rng.uniform(0.2, 5.0, (2, 40, 48)).astype(np.float32)
    conf = rng.uniform(0, 1, (40, 48)).astype(np.float32)
    fused = fuse_scores(scores, factors, conf, cfg)
    for y, x in [(0, 0), (5, 7), (39, 47), (20, 11)]:
        pk = [max(0.0, 1 - scores[:, y, x].sum()), *scores[:, y, x]]
        pk = [(v + cfg.eps) / (1 + 3 * cfg.eps) for v in pk]
        keep = 1 - cfg.fb_shrink * (1 - conf[y, x])
        pk = [1 / 3 + keep * (v - 1 / 3) for v in pk]
        num = [pk[0], pk[1] * factors[0, y, x], pk[2] * factors[1, y, x]]
        np.testing.assert_allclose(fused[:, y, x], [num[1] / sum(num), num[2] / sum(num)], rtol=1e-5)


def test_fb_check_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    h, w = 20, 24
    b = cv2.resize(rng.normal(0, 2, (3, 3, 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    f = -b + rng.normal(0, 0.05, (h, w, 2)).astype(np.float32)  # smooth and consistent, up to noise
    f[5:10, 5:12] += 6.0  # an inconsistent patch
    got = fb_consistency(b, f, px=2.0)

    def bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
        x = min(max(x, 0.0), w - 1.0)
        y = min(max(y, 0.0), h - 1.0)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        ax, ay = x - x0, y - y0
        return ((1 - ax) * (1 - ay) * img[y0, x0] + ax * (1 - ay) * img[y0, x1] + (1 - ax) * ay * img[y1, x0]
                + ax * ay * img[y1, x1])

    want = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            fw = bilinear(f, x + b[y, x, 0], y + b[y, x, 1])
            e2 = float(((b[y, x] + fw) ** 2).sum())
            m2 = float((b[y, x] ** 2).sum() + (fw ** 2).sum())
            want[y, x] = e2 <= 0.01 * m2 + 0.5 / 4.0
    assert (got == want).mean() > 0.99  # remap's 1/32-px fixed point may flip a borderline pixel
    assert not got[6:9, 6:11].any() and got.mean() > 0.5
    soft = fb_confidence(b, f, (2 * h, 2 * w))
    assert soft.shape == (2 * h, 2 * w) and soft.dtype == np.float32 and 0.0 <= soft.min() and soft.max() <= 1.0


def test_an_anchor_without_objects_runs():
    """All objects lost at a checkpoint (an all-background mask) must not break the stage."""
    clip = make_scene_clip([((20, 60), (60, 60), 12)], [RED], num_frames=4)
    seg = Segmenter(load_model("default"))
    seg.step(clip.frames[0], np.zeros_like(clip.masks[0]))
    for f in clip.frames[1:]:
        r = seg.step(f)
        assert r.mask.max() == 0 and r.object_ids == (0,)
