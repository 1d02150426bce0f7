"""Tests for rtvos.data.synthetic: determinism, exact masks, motion, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtvos.data import ellipse_mask, make_synthetic_clip, write_synthetic_clip
from rtvos.io import open_source, read_mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_shapes_and_determinism() -> None:
    a = make_synthetic_clip(seed=3)
    b = make_synthetic_clip(seed=3)
    c = make_synthetic_clip(seed=4)
    assert a.num_frames == len(a.masks) == 24 and a.size == (128, 160)
    for f, m in zip(a.frames, a.masks):
        assert f.shape == (128, 160, 3) and f.dtype == np.uint8
        assert m.shape == (128, 160) and m.dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert not np.array_equal(a.frames[0], c.frames[0])


def test_single_object_mask_is_exact_shape_and_moves() -> None:
    clip = make_synthetic_clip()
    h, w = clip.size
    for t in range(clip.num_frames):
        drawn = ellipse_mask(h, w, clip.centers[t, 0], clip.axes[0], clip.angles[t, 0])
        np.testing.assert_array_equal(clip.masks[t] == 1, drawn)
        assert set(np.unique(clip.masks[t])) == {0, 1}
    a, b = clip.axes[0]
    area = (clip.masks[0] > 0).sum()
    assert abs(area - np.pi * a * b) < 0.1 * np.pi * a * b  # pixel count ~ ellipse area
    assert _iou(clip.masks[0] > 0, clip.masks[-1] > 0) < 0.5
    step = np.linalg.norm(np.diff(clip.centers[:, 0], axis=0), axis=1)
    np.testing.assert_allclose(step, 2.0, atol=1e-9)  # default: straight line, 2 px/frame
    # The object is textured and distinct from the background it covers.
    obj = clip.frames[0][clip.masks[0] > 0].astype(float)
    bg = clip.frames[0][clip.masks[0] == 0].astype(float)
    assert obj.std(axis=0).min() > 3
    assert np.abs(obj.mean(axis=0) - bg.mean(axis=0)).max() > 20


@pytest.mark.parametrize("motion", ["linear", "circular", "static"])
def test_motions_keep_objects_inside(motion: str) -> None:
    clip = make_synthetic_clip(
        num_frames=40, motion=motion, rotation_deg=3.0, seed=1  # type: ignore[arg-type]
    )
    areas = [int((m > 0).sum()) for m in clip.masks]
    assert min(areas) > 0.9 * max(areas)  # never clipped by the frame border
    moved = _iou(clip.masks[0] > 0, clip.masks[20] > 0)
    if motion == "static":
        assert (clip.centers == clip.centers[0]).all()
    else:
        assert moved < 0.5


def test_multiple_objects_occlusion_and_custom_ids() -> None:
    ids = (3, 7, 20)
    clip = make_synthetic_clip(num_frames=30, num_objects=3, ids=ids, seed=1)
    h, w = clip.size
    assert clip.ids == ids
    seen: set[int] = set()
    for t in range(clip.num_frames):
        expected = np.zeros((h, w), np.uint8)
        for k, obj_id in enumerate(ids):  # later objects drawn over earlier ones
            expected[ellipse_mask(h, w, clip.centers[t, k], clip.axes[k], clip.angles[t, k])] = obj_id
        np.testing.assert_array_equal(clip.masks[t], expected)
        seen |= set(np.unique(clip.masks[t]).tolist())
    assert seen == {0, *ids}
    with pytest.raises(ValueError):
        make_synthetic_clip(num_objects=2, ids=[1, 1])
    with pytest.raises(ValueError):
        make_synthetic_clip(num_objects=2, ids=[1])


def test_write_synthetic_clip(tmp_path: Path) -> None:
    clip = make_synthetic_clip(num_frames=8, num_objects=2, seed=2)
    paths = write_synthetic_clip(clip, tmp_path / "clip", frame_ext="png")
    assert paths.video == tmp_path / "clip" / "clip.mp4"
    assert paths.first_mask == paths.masks_dir / "00000.png" and len(paths.mask_files) == 8
    with open_source(paths.video) as src:
        assert src.num_frames == 8 and src.size == clip.size
        assert len(list(src)) == 8
    assert paths.frames_dir is not None
    with open_source(paths.frames_dir) as src:
        for f in src:
            np.testing.assert_array_equal(f.image, clip.frames[f.source_index])  # png: lossless
    for i, p in enumerate(paths.mask_files):
        ids, pal = read_mask(p)
        np.testing.assert_array_equal(ids, clip.masks[i])
        np.testing.assert_array_equal(pal, clip.palette)

    jpg = write_synthetic_clip(clip, tmp_path / "jpg", as_video=False)
    assert jpg.video is None and jpg.frames_dir is not None
    assert sorted(p.name for p in jpg.frames_dir.iterdir())[0] == "00000.jpg"
    with pytest.raises(ValueError):
        write_synthetic_clip(clip, tmp_path / "none", as_video=False, as_frames=False)
