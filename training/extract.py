"""Decode videos once into JPEG frame folders at a reduced short side.

Why: `PairDataset` caches whole decoded videos per worker; when the set is larger than the cache, every miss
re-decodes a clip at full resolution and the data loader becomes the bottleneck (and the caches cost GBs of
RAM per worker). Frame folders are read per item (two small JPEGs), with no cache.

    python -m rtvos.training.extract /work/shared/data/videos --out /work/runs/frames256 --short 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2

from .data import VIDEO_EXTENSIONS

__all__ = ["extract_video", "extract_all"]


def extract_video(path: Path, out_dir: Path, short: int, quality: int = 95) -> int:
    """Write `out_dir/%05d.jpg` (short side ≤ `short`); returns the frame count. Skips a finished folder."""
    done = out_dir / ".done"
    if done.is_file():
        return int(done.read_text() or 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for vf in c.decode(stream):
                s = short / min(vf.width, vf.height)
                if s < 1:
                    vf = vf.reformat(width=max(1, round(vf.width * s)) // 2 * 2,
                                     height=max(1, round(vf.height * s)) // 2 * 2)
                bgr = vf.to_ndarray(format="bgr24")
                cv2.imwrite(str(out_dir / f"{n:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
                n += 1
    except av.error.FFmpegError as e:  # a truncated tail still leaves usable frames
        if n == 0:
            raise ValueError(f"cannot decode video {path}: {type(e).__name__}") from None
    done.write_text(str(n))
    return n


def extract_all(root: Path, out: Path, short: int) -> int:
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise ValueError(f"no videos ({'/'.join(sorted(VIDEO_EXTENSIONS))}) under {root}")
    total = 0
    for i, v in enumerate(videos):
        total += extract_video(v, out / v.relative_to(root).with_suffix(""), short)
        print(f"[{i + 1}/{len(videos)}] {v.name}: {total} frames so far", file=sys.stderr)
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="folder of videos")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--short", type=int, default=256, help="short side of the written frames (default 256)")
    a = p.parse_args(argv)
    print(f"{extract_all(a.root, a.out, a.short)} frames written under {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
