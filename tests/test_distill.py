"""Issue #11: the DIS teacher cache and the prior-model distillation recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
from rtvos.flow import DISFlow, to_gray
from rtvos.models import create_model, load_model
from rtvos.training.distill import CachePairs, DistillConfig, distill_loss, field_to_model, train
from rtvos.training.flow_cache import CacheSpec, build_cache, build_clip, clip_key, consistency_mask, load_clip, plan_pairs

SPEC = CacheSpec(prior="ultrafast", teacher="fast", short=64, pairs=4, gaps=(1, 2))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for seed in (1, 2):
        clip = make_synthetic_clip(num_frames=8, height=72, width=128, num_objects=1, seed=seed)
        paths = write_synthetic_clip(clip, root / f"c{seed}", as_frames=False)
        os.replace(paths.video, root / f"clip{seed}.mp4")
    return root


def test_cache_written_once_and_read_back_bit_exact(videos: Path, tmp_path: Path) -> None:
    clip = videos / "clip1.mp4"
    entry = build_clip(clip, tmp_path, SPEC)
    assert entry is not None and (entry / "meta.json").exists()
    first = {k: np.array(v) for k, v in load_clip(entry).items()}
    stamp = (entry / "teacher.npy").stat().st_mtime_ns
    assert build_clip(clip, tmp_path, SPEC) == entry  # second call reuses, does not recompute
    assert (entry / "teacher.npy").stat().st_mtime_ns == stamp
    again = load_clip(entry)
    for k, v in first.items():
        assert v.dtype == again[k].dtype and np.array_equal(v, again[k]), k
    meta = json.loads((entry / "meta.json").read_text())
    n = meta["num_pairs"]
    assert first["prior"].shape == (n, 64, 114, 2) and first["prior"].dtype == np.float16
    assert first["frames"].shape == (n, 2, 64, 114, 3) and first["valid"].dtype == np.uint8
    # the stored teacher is DIS (full resolution) of that pair, area-resized to the stored scale
    from rtvos.io import open_source

    with open_source(clip) as src:
        frames = [f.image if hasattr(f, "image") else f for f in src]
    a, b = first["pairs"][0]
    full = DISFlow(SPEC.teacher)(to_gray(frames[b]), to_gray(frames[a]))
    import cv2

    small = cv2.resize(full, (114, 64), interpolation=cv2.INTER_AREA) * np.array([114 / 128, 64 / 72], np.float32)
    np.testing.assert_allclose(first["teacher"][0].astype(np.float32), small, atol=2e-2)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_cache_invalidated_by_clip_or_preset_change(videos: Path, tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes((videos / "clip1.mp4").read_bytes())
    k0 = clip_key(clip, SPEC)
    assert clip_key(clip, CacheSpec(prior="ultrafast", teacher="medium", short=64, pairs=4)) != k0
    assert clip_key(clip, CacheSpec(prior="ultrafast-fine", teacher="fast", short=64, pairs=4)) != k0
    e0 = build_clip(clip, tmp_path / "cache", SPEC)
    clip.write_bytes((videos / "clip2.mp4").read_bytes())  # the clip changes (size and mtime)
    assert clip_key(clip, SPEC) != k0
    e1 = build_clip(clip, tmp_path / "cache", SPEC)
    assert e1 != e0 and not np.array_equal(np.load(e1 / "frames.npy"), np.load(e0 / "frames.npy"))


def test_plan_pairs_and_bad_spec() -> None:
    pairs = plan_pairs(10, CacheSpec(pairs=4, gaps=(1, 2)))
    assert len(pairs) == 4 and all(t - s in (1, 2) for s, t in pairs) and pairs[-1][1] == 9
    assert plan_pairs(2, CacheSpec(gaps=(1, 2))) == []
    with pytest.raises(ValueError, match="preset"):
        CacheSpec(prior="nope")


def test_consistency_mask_flags_inconsistent_pixels() -> None:
    bwd = np.zeros((20, 30, 2), np.float32)
    bwd[..., 0] = 2.0
    fwd = -bwd.copy()
    ok = consistency_mask(bwd, fwd)
    assert ok[:, :27].all()  # consistent where the source is inside
    assert not ok[:, -1].any()  # the source x + 2 lies outside for the last columns
    fwd[5:10, 5:10] = 5.0  # a patch whose forward motion disagrees
    assert not consistency_mask(bwd, fwd)[5:10, 3:8].any()


def test_field_to_model_layout() -> None:
    f = torch.zeros(1, 2, 64, 96)
    f[:, 0] = 8.0  # dx = 8 px at the stored scale
    g = field_to_model(f, (16, 24))
    assert torch.allclose(g[:, 1], torch.full((1, 16, 24), 2.0)) and torch.allclose(g[:, 0], torch.zeros(1, 16, 24))


def test_distill_step_lowers_loss_and_run_resumes(videos: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_cache(sorted(videos.glob("*.mp4")), cache, SPEC)
    data = CachePairs(cache, crop=64)
    assert len(data) == 8
    torch.manual_seed(0)
    model = create_model("rpmnet_dis_r18_w50_cu")
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in data[0]}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss, stats = distill_loss(model, batch, 64, 0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["loss"])
    assert losses[-1] < losses[0]
    cfg = DistillConfig(str(cache), str(tmp_path / "run"), model="rpmnet_dis_r18_w50", size=64, crop=64, batch=2,
                        iters=4, workers=0, ckpt_every=2, log_every=2)
    train(cfg)
    done = load_model(tmp_path / "run" / "ckpt_0000004.pt")
    assert done.meta["size"] == 64 and done.config.prior == "ultrafast-fine"
    cfg.iters, cfg.resume = 6, True
    train(cfg)
    assert (tmp_path / "run" / "ckpt_0000006.pt").exists()
    rows = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]  # resumed at 4, not from 0


def test_distill_non_square_batch() -> None:
    """The loss runs on non-square crops (the network sees what the Segmenter feeds it)."""
    torch.manual_seed(0)
    model = create_model("rpmnet_dis_r18_w50_cu")
    b = {"ref": torch.rand(2, 3, 128, 256), "tar": torch.rand(2, 3, 128, 256), "prior": torch.randn(2, 2, 128, 256),
         "teacher": torch.randn(2, 2, 128, 256), "valid": torch.ones(2, 1, 128, 256)}
    from rtvos.training import distill

    ref, tar = b["ref"], b["tar"]
    e = model.embed(torch.cat((distill._small(ref, (64, 128)), distill._small(tar, (64, 128)))))
    assert tuple(e.shape[-2:]) == (16, 32)
    loss, _ = distill_loss(model, b, (64, 128), 0.01)
    loss.backward()
    assert torch.isfinite(loss)
