"""Teacher cache: classical-flow fields computed once per training clip, so a training step never pays for DIS.

For each clip, pairs (t − gap, t) are chosen deterministically; for each pair we store, at a reduced scale
(short side ``short``), the two RGB frames and, computed on the *full-resolution* frames and then resized:
- ``prior``: the backward field of the prior preset (what the model gets as input at inference),
- ``teacher``: the backward field of the teacher preset (t → t − gap), and its forward field (t − gap → t),
- ``valid``: the teacher's forward–backward consistency mask (where the teacher is trusted).
Fields are float16 in stored-scale pixels, (dx, dy) as in `rtvos.flow`.

One folder per clip, named by a key that hashes everything the contents depend on (clip path, size and
mtime, presets, OpenCV version, scale, pair plan), so a changed clip or preset is recomputed, never reused.
Arrays are written under temporary names and the folder is renamed into place: a killed run leaves no
half-written entry under a final name.

    python -m rtvos.training.flow_cache ../shared/data/videos --out ~/rtvos-runs/teacher --pairs 30 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from rtvos.flow import FLOW_PRESETS, DISFlow, resize_field, to_gray

__all__ = ["CacheSpec", "clip_key", "plan_pairs", "build_clip", "load_clip", "build_cache", "consistency_mask"]

VERSION = 1
ARRAYS = ("frames", "prior", "teacher", "teacher_fwd", "valid", "pairs")


@dataclass(frozen=True)
class CacheSpec:
    prior: str = "ultrafast-fine"
    teacher: str = "medium-fine"
    short: int = 256  # stored short side
    pairs: int = 30  # pairs per clip
    gaps: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        for p in (self.prior, self.teacher):
            if p not in FLOW_PRESETS:
                raise ValueError(f"unknown flow preset {p!r}; expected one of {', '.join(FLOW_PRESETS)}")
        if self.short < 16 or self.pairs < 1 or not self.gaps or min(self.gaps) < 1:
            raise ValueError(f"bad cache spec {self}")


def clip_key(path: Path, spec: CacheSpec) -> str:
    st = path.stat()
    parts = {
        "version": VERSION, "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "spec": asdict(spec), "prior": FLOW_PRESETS[spec.prior].key(), "teacher": FLOW_PRESETS[spec.teacher].key(),
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def plan_pairs(num_frames: int, spec: CacheSpec) -> list[tuple[int, int]]:
    """Evenly spaced targets t, gaps cycling through spec.gaps: [(t − gap, t), ...]."""
    top = max(spec.gaps)
    if num_frames <= top:
        return []
    ts = np.linspace(top, num_frames - 1, num=min(spec.pairs, num_frames - top)).round().astype(int)
    return [(int(t) - spec.gaps[i % len(spec.gaps)], int(t)) for i, t in enumerate(ts)]


def consistency_mask(bwd: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """Where following the backward field and then the forward field returns to the start (Sundaram et al.):
    |b + f∘b|² < 0.01 (|b|² + |f∘b|²) + 0.5, in pixels."""
    h, w = bwd.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    f_at = cv2.remap(fwd, gx + bwd[..., 0], gy + bwd[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    s = bwd + f_at
    lhs = (s * s).sum(-1)
    rhs = 0.01 * ((bwd * bwd).sum(-1) + (f_at * f_at).sum(-1)) + 0.5
    inside = (gx + bwd[..., 0] >= 0) & (gx + bwd[..., 0] <= w - 1) & (gy + bwd[..., 1] >= 0) & (gy + bwd[..., 1] <= h - 1)
    return (lhs < rhs) & inside


def _decode(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def build_clip(path: Path, out_root: Path, spec: CacheSpec) -> Path | None:
    """Compute one clip's entry (or return the existing one). None when the clip has too few frames."""
    key = clip_key(path, spec)
    final = out_root / f"{path.stem}-{key}"
    if (final / "meta.json").exists():
        return final
    frames = list(_decode(path))
    pairs = plan_pairs(len(frames), spec)
    if not pairs:
        return None
    h, w = frames[0].shape[:2]
    scale = spec.short / min(h, w)
    sh, sw = round(h * scale), round(w * scale)
    prior_dis, teacher_dis = DISFlow(spec.prior), DISFlow(spec.teacher)
    small = lambda im: cv2.resize(im, (sw, sh), interpolation=cv2.INTER_AREA)  # noqa: E731
    grays = {}
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS if k != "pairs"}
    for a, b in pairs:
        ga = grays.setdefault(a, to_gray(frames[a]))
        gb = grays.setdefault(b, to_gray(frames[b]))
        bwd = teacher_dis(gb, ga)
        fwd = teacher_dis(ga, gb)
        valid = consistency_mask(bwd, fwd)
        arrays["frames"].append(np.stack([small(frames[a]), small(frames[b])]))
        arrays["prior"].append(resize_field(prior_dis(gb, ga), (sh, sw)).astype(np.float16))
        arrays["teacher"].append(resize_field(bwd, (sh, sw)).astype(np.float16))
        arrays["teacher_fwd"].append(resize_field(fwd, (sh, sw)).astype(np.float16))
        arrays["valid"].append(cv2.resize(valid.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST))
    tmp = out_root / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", np.stack(v))
    np.save(tmp / "pairs.npy", np.asarray(pairs, np.int32))
    meta = {"clip": str(path.resolve()), "key": key, "spec": asdict(spec), "frame_size": [h, w],
            "stored_size": [sh, sw], "num_pairs": len(pairs)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if final.exists():  # a stale partial entry without meta.json
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_clip(entry: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    mode = "r" if mmap else None
    return {k: np.load(entry / f"{k}.npy", mmap_mode=mode) for k in ARRAYS}


def _build_one(args: tuple[Path, Path, CacheSpec]) -> tuple[str, Path | None, float]:
    t0 = time.perf_counter()
    path, out, spec = args
    cv2.setNumThreads(1)
    return path.name, build_clip(path, out, spec), time.perf_counter() - t0


def build_cache(clips: list[Path], out: Path, spec: CacheSpec, workers: int = 1) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(p, out, spec) for p in clips]
    entries: list[Path] = []
    if workers <= 1:
        results: Iterator[tuple[str, Path | None, float]] = map(_build_one, jobs)
    else:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_build_one, jobs)
    for i, (name, entry, dt) in enumerate(results, 1):
        print(f"[{i}/{len(jobs)}] {name}: {'skipped (too short)' if entry is None else entry.name} {dt:.1f}s",
              flush=True)
        if entry is not None:
            entries.append(entry)
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", type=Path, help="folder of training clips (MP4)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prior", default=CacheSpec.prior, choices=list(FLOW_PRESETS))
    ap.add_argument("--teacher", default=CacheSpec.teacher, choices=list(FLOW_PRESETS))
    ap.add_argument("--short", type=int, default=CacheSpec.short)
    ap.add_argument("--pairs", type=int, default=CacheSpec.pairs)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.videos.is_dir():
        print(f"error: not a folder: {args.videos}", file=sys.stderr)
        return 2
    clips = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".mov", ".avi", ".webm"))
    spec = CacheSpec(prior=args.prior, teacher=args.teacher, short=args.short, pairs=args.pairs)
    build_cache(clips, args.out, spec, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
