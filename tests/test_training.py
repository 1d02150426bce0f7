"""Self-supervised training: learning happens, checkpoints load and resume exactly, DDP runs, bad input fails."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rtvos
from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
from rtvos.training import PairDataset, PairSampler, TrainConfig, find_clips, train
from rtvos.training.train import make_optimizer, train_step

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Background drift dominates the warp loss, so the first thing the flow learns shows up in 30 steps.
    root = tmp_path_factory.mktemp("videos")
    for i in range(2):
        clip = make_synthetic_clip(num_frames=16, height=80, width=96, seed=i, speed=3.0, background_speed=2.0)
        write_synthetic_clip(clip, root / f"clip{i}", as_video=True, as_frames=False)
    return root


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(size=64, batch=2, iters=30, gap=3, workers=0, ckpt_every=100, quiet=True)
    base.update(kw)
    return TrainConfig(data=[str(data)], out=str(out), **base)  # type: ignore[arg-type]


def test_one_step_lowers_loss_on_fixed_pair() -> None:
    torch.manual_seed(0)
    clip = make_synthetic_clip(num_frames=4, height=64, width=64, seed=3, speed=0.0, background_speed=2.0)
    ref = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)[None].float() / 255
    tar = torch.from_numpy(clip.frames[3]).permute(2, 0, 1)[None].float() / 255
    ref, tar = ref.repeat(2, 1, 1, 1), tar.repeat(2, 1, 1, 1)
    model = rtvos.create_model("rpmnet_r18").train()
    opt = make_optimizer(model, TrainConfig(data=[], out="", lr=0.05))
    losses = [float(train_step(model, opt, ref, tar, lr=0.05)) for _ in range(4)]
    assert losses[-1] < losses[0], losses


def test_pairs_share_augmentation_and_are_deterministic(videos: Path) -> None:
    ds = PairDataset(find_clips([videos]), size=64, gap_range=(2, 4), seed=1)
    a = ds[(5, 0)]
    b = ds[(5, 0)]
    assert a[0].shape == (3, 64, 64) and a[0].dtype == torch.uint8
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ds[(5, 1)][1], a[1])  # another epoch, another crop
    # ranks split one permutation; resuming at an offset continues it
    s0, s1 = PairSampler(len(ds), seed=2, rank=0, world_size=2), PairSampler(len(ds), seed=2, rank=1, world_size=2)

    def take(sampler: PairSampler, k: int) -> list[tuple[int, int]]:
        it = iter(sampler)
        return [next(it) for _ in range(k)]

    n = s0.per_rank
    assert set(i for i, _ in take(s0, n)) | set(i for i, _ in take(s1, n)) == set(range(len(ds)))
    assert take(PairSampler(len(ds), seed=2, consumed=7), 5) == take(PairSampler(len(ds), seed=2), 12)[7:]


def test_short_run_learns_and_checkpoint_segments(videos: Path, tmp_path: Path) -> None:
    res = train(_cfg(videos, tmp_path / "run", lr=0.1, workers=1))
    losses = [v for _, v in res.losses]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
    with open(tmp_path / "run" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert all(0 <= float(r["data_share"]) <= 1 and float(r["it_per_s"]) > 0 for r in rows)
    assert res.checkpoint == tmp_path / "run" / "ckpt_0000030.pt"
    model = rtvos.load_model(res.checkpoint)
    assert model.meta["trained"] and model.meta["size"] == 64
    seg = rtvos.Segmenter(model, size=64)
    clip = make_synthetic_clip(num_frames=2, height=48, width=64, seed=5)
    seg.step(clip.frames[0], clip.masks[0])
    out = seg.step(clip.frames[1])
    assert out.mask.shape == (48, 64)


def test_resume_matches_uninterrupted_run(videos: Path, tmp_path: Path) -> None:
    straight = train(_cfg(videos, tmp_path / "a", iters=6, workers=1))
    train(_cfg(videos, tmp_path / "b", iters=6, ckpt_every=3, workers=1, stop_at=3))
    resumed = train(_cfg(videos, tmp_path / "b", iters=6, ckpt_every=3, workers=1, resume=True))
    assert resumed.start_step == 3
    assert [s for s, _ in resumed.losses] == [4, 5, 6]
    np.testing.assert_allclose([v for _, v in resumed.losses], [v for _, v in straight.losses[3:]], rtol=0, atol=1e-6)
    a = rtvos.load_model(tmp_path / "a" / "ckpt_0000006.pt").state_dict()
    b = rtvos.load_model(tmp_path / "b" / "ckpt_0000006.pt").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_two_process_gloo(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "rtvos", "train", str(videos),
           "--out", str(out), "--size", "64", "--batch", "2", "--iters", "3", "--gap", "3", "--workers", "0",
           "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["ckpt_0000003.pt", "ckpt_0000003.state.pt", "train_log.csv"]
    state = torch.load(out / "ckpt_0000003.state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["consumed_per_rank"] == 6
    with open(out / "train_log.csv") as f:
        assert len(list(csv.DictReader(f))) == 3  # rank 0 only
    rtvos.load_model(out / "ckpt_0000003.pt")


def test_bad_data_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=str(missing)):
        train(_cfg(missing, tmp_path / "out"))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no videos here")
    with pytest.raises(ValueError, match=str(empty)):
        find_clips([empty])
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rtvos.apps.cli import main

    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtvos train: error:") and str(tmp_path / "nope") in err and "\n" not in err


def test_davis_frames_and_exclude(tmp_path: Path) -> None:
    root = tmp_path / "davis"
    for name in ("bear", "dog"):
        paths = write_synthetic_clip(make_synthetic_clip(num_frames=8, height=48, width=64, seed=len(name)),
                                     tmp_path / "raw" / name, as_video=False, as_frames=True)
        (root / "JPEGImages" / "480p").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / "480p").mkdir(parents=True, exist_ok=True)
        paths.frames_dir.rename(root / "JPEGImages" / "480p" / name)
        paths.masks_dir.rename(root / "Annotations" / "480p" / name)
    clips = find_clips([root])
    assert [(c.name, c.kind, c.num_frames) for c in clips] == [("bear", "frames", 8), ("dog", "frames", 8)]
    assert [c.name for c in find_clips([root], exclude=["dog"])] == ["bear"]
    with pytest.raises(ValueError, match="excluded"):
        find_clips([root], exclude=["480p"])
    ref, tar = PairDataset(clips, size=64, gap=5)[(2, 0)]
    assert ref.shape == tar.shape == (3, 64, 64) and not torch.equal(ref, tar)


# -- beyond the paper: DIS teacher, Lab reconstruction; validation hook ---------------------------------------
def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (7, 7), 2)


def test_dis_teacher_matches_f4_convention() -> None:
    from rtvos.training.teacher import DISTeacher

    img = _textured(200, 200)
    ref = img[20:148, 20:148].copy()
    tar = img[28:156, 12:140].copy()  # tar(y, x) = ref(y + 8, x - 8): f4 = (dy, dx) = (+8, -8) / 4
    f4, weight = DISTeacher("medium")(ref, tar)
    assert f4.shape == (2, 32, 32) and weight.shape == (1, 32, 32)
    inner = (slice(3, 29), slice(3, 29))
    assert torch.allclose(f4[0][inner].median(), torch.tensor(2.0), atol=0.1)
    assert torch.allclose(f4[1][inner].median(), torch.tensor(-2.0), atol=0.1)
    assert float(weight[0][inner].mean()) > 0.6
    # a failed flow (images unrelated) is masked out by the forward-backward check
    _, w_bad = DISTeacher("medium")(ref, _textured(128, 128, seed=7))
    assert float(w_bad.mean()) < float(weight.mean())
    # the model's own warp, driven by the teacher, rebuilds the target from the reference
    from rtvos.models import RPMNet

    r = RPMNet.downsample(torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255)
    t = RPMNet.downsample(torch.from_numpy(tar).permute(2, 0, 1)[None].float() / 255)
    warped = RPMNet.warp(r, f4[None])
    err_teacher = (warped - t)[..., 3:29, 3:29].abs().mean()
    err_identity = (r - t)[..., 3:29, 3:29].abs().mean()
    assert err_teacher < 0.3 * err_identity, (err_teacher, err_identity)


def test_lab_matches_opencv() -> None:
    import cv2

    from rtvos.training.teacher import rgb_to_lab

    x = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    ours = rgb_to_lab(torch.from_numpy(x).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy() * 100
    np.testing.assert_allclose(ours, cv2.cvtColor(x, cv2.COLOR_RGB2Lab), atol=0.5)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_teacher_loss_decreases_on_fixed_pair(kind: str) -> None:
    from rtvos.training.teacher import DISTeacher

    torch.manual_seed(0)
    img = _textured(120, 120, seed=1)
    ref_np, tar_np = img[20:84, 20:84].copy(), img[24:88, 16:80].copy()
    flow, weight = DISTeacher("medium")(ref_np, tar_np)
    ref = torch.from_numpy(ref_np).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    tar = torch.from_numpy(tar_np).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    flow, weight = flow[None].repeat(2, 1, 1, 1), weight[None].repeat(2, 1, 1, 1)
    model = rtvos.create_model("rpmnet_r18").train()
    opt = make_optimizer(model, TrainConfig(data=[], out="", lr=0.01))
    parts: list[dict[str, float]] = []
    losses = []
    for _ in range(5):
        p: dict[str, float] = {}
        losses.append(float(train_step(model, opt, ref, tar, lr=0.01, teacher=flow, weight=weight,
                                       teacher_weight=0.1, color="lab", parts=p, teacher_loss=kind)))
        parts.append(p)
    assert set(parts[0]) == {"recon", "teacher"}
    assert losses[-1] < losses[0] and parts[-1]["teacher"] < parts[0]["teacher"], (losses, parts)


def _davis_root(tmp_path: Path) -> Path:
    root = tmp_path / "davis_dev"
    for i, name in enumerate(("alpha", "beta")):
        clip = make_synthetic_clip(num_frames=6, height=64, width=80, seed=10 + i, speed=2.0)
        paths = write_synthetic_clip(clip, tmp_path / "raw" / name, as_video=False, as_frames=True)
        for kind, src in (("JPEGImages", paths.frames_dir), ("Annotations", paths.masks_dir)):
            (root / kind / "480p").mkdir(parents=True, exist_ok=True)
            src.rename(root / kind / "480p" / name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "dev.txt").write_text("alpha\nbeta\n")
    return root


def test_validation_hook_keeps_best(videos: Path, tmp_path: Path) -> None:
    import json

    from rtvos.eval import load_dataset
    from rtvos.training.train import validate

    dev = _davis_root(tmp_path)
    out = tmp_path / "run"
    res = train(_cfg(videos, out, iters=4, lr=0.05, workers=1, teacher="dis", teacher_preset="fast",
                     val_root=str(dev), val_set="dev", val_every=2))
    assert [int(v["step"]) for v in res.val] == [2, 4]
    with open(out / "val_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4] and all(0 <= float(r["jf"]) <= 1 for r in rows)
    with open(out / "train_log.csv") as f:
        assert all(float(r["teacher"]) > 0 and float(r["recon"]) > 0 for r in csv.DictReader(f))
    best = json.loads((out / "best.json").read_text())
    top = max(res.val, key=lambda v: v["jf"])
    assert best["step"] == int(top["step"]) and best["jf"] == pytest.approx(top["jf"])
    model = rtvos.load_model(out / "best.pt")
    assert model.meta["iterations"] == best["step"] and "DIS" in str(model.meta["recipe"])
    # best.pt really holds the scored weights: rescoring it gives the same J&F
    again = validate(model, load_dataset(dev, "davis2017", "dev"), size=64)
    assert again["jf"] == pytest.approx(best["jf"], abs=1e-6)
    assert again["frames"] == 12


def test_bad_recipe_options(videos: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--teacher"):
        train(_cfg(videos, tmp_path / "o", teacher="raft"))
    with pytest.raises(ValueError, match="--teacher-loss"):
        train(_cfg(videos, tmp_path / "o", teacher="dis", teacher_loss="huber"))
    with pytest.raises(ValueError, match="--optim"):
        train(_cfg(videos, tmp_path / "o", optim="lbfgs"))
    with pytest.raises(ValueError, match="--val-size"):
        train(_cfg(videos, tmp_path / "o", val_size=100))
    with pytest.raises(ValueError, match="DAVIS root|not found|missing"):
        train(_cfg(videos, tmp_path / "o", val_root=str(tmp_path / "nope")))
    assert not (tmp_path / "o").exists()


def test_extract_frames_feeds_training(videos: Path, tmp_path: Path) -> None:
    from rtvos.training.extract import extract_all

    n = extract_all(videos, tmp_path / "frames", short=48)
    clips = find_clips([tmp_path / "frames"])
    assert [c.kind for c in clips] == ["frames", "frames"] and sum(c.num_frames for c in clips) == n == 32
    assert extract_all(videos, tmp_path / "frames", short=48) == n  # finished folders are skipped
    ref, tar = PairDataset(clips, size=64, gap=3)[(0, 0)]
    assert ref.shape == tar.shape == (3, 64, 64)
