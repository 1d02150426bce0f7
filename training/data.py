"""Self-supervised pair data: (reference = t − gap, target = t) frames from videos and frame folders.

Why the design:
- Every random choice of an item (gap, crop, scale, flip) comes from a generator seeded by
  (seed, epoch, index), never from worker RNG state, so an item is the same whatever worker decodes it
  and a resumed run sees exactly the data an uninterrupted one would.
- Video files are decoded *whole* once per worker at a reduced resolution (short side `cache_short`,
  default = S) and kept in a per-worker LRU cache bounded in bytes. Seeking would cost up to a GOP of
  full-resolution decodes per item; caching makes repeat visits free. The cost is memory
  (`cache_mb` per worker) and thrashing when the video set is much larger than the cache: for large
  datasets, extract frames to folders (DAVIS layout), which are read per item with no cache.
- `PairSampler` yields (index, epoch) keys: its permutation depends only on (seed, epoch), it shards
  by rank like DistributedSampler, and it starts at a consumed-count offset for exact resume.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rtvos.io.base import IMAGE_EXTENSIONS, natural_key

__all__ = ["VIDEO_EXTENSIONS", "Clip", "find_clips", "PairDataset", "PairSampler"]

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm"})
# Folders that hold ground truth or outputs, never training frames.
_SKIP_DIRS = frozenset({"annotations", "masks", "annotations_unsupervised"})


@dataclass(frozen=True)
class Clip:
    """One training sequence: a video file or a folder of frames."""

    name: str
    path: Path
    kind: str  # "video" | "frames"
    num_frames: int
    files: tuple[Path, ...] = ()  # frame files when kind == "frames"


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


def _count_video_frames(path: Path) -> int:
    """Container frame count, else a demux-only packet count (no decoding)."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ValueError(f"no video stream in {path}")
            stream = c.streams.video[0]
            if stream.frames and stream.frames > 0:
                return int(stream.frames)
            return sum(1 for p in c.demux(stream) if p.size > 0)
    except av.error.FFmpegError:
        raise ValueError(f"cannot open as video (unsupported or corrupt file): {path}") from None


def _video_clip(path: Path) -> Clip:
    return Clip(name=path.stem, path=path, kind="video", num_frames=_count_video_frames(path))


def _frames_clip(folder: Path, files: list[Path]) -> Clip:
    return Clip(name=folder.name, path=folder, kind="frames", num_frames=len(files), files=tuple(files))


def _scan(root: Path) -> list[Clip]:
    """Videos and frame folders under `root`; a DAVIS root contributes only JPEGImages/480p (or JPEGImages)."""
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"not a video file ({'/'.join(sorted(VIDEO_EXTENSIONS))}): {root}")
        return [_video_clip(root)]
    davis = root / "JPEGImages"
    if davis.is_dir():
        root = davis / "480p" if (davis / "480p").is_dir() else davis
    clips: list[Clip] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if d.lower() not in _SKIP_DIRS), key=natural_key)
        here = Path(dirpath)
        for f in sorted(filenames, key=natural_key):
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS:
                clips.append(_video_clip(here / f))
        images = [here / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if len(images) >= 2:
            clips.append(_frames_clip(here, sorted(images, key=lambda p: natural_key(p.name))))
    return clips


def find_clips(paths: Sequence[str | os.PathLike[str]], exclude: Sequence[str] = ()) -> list[Clip]:
    """All training clips under `paths`, minus those whose path contains any `exclude` substring."""
    if not paths:
        raise ValueError("no data paths given")
    clips: list[Clip] = []
    for p in paths:
        root = Path(p)
        if not root.exists():
            raise ValueError(f"data path not found: {root}")
        found = _scan(root)
        if not found:
            raise ValueError(f"no videos ({'/'.join(sorted(VIDEO_EXTENSIONS))}) or frame folders in {root}")
        clips.extend(found)
    kept = [c for c in clips if not any(s and s in str(c.path) for s in exclude)]
    if not kept:
        raise ValueError(f"all {len(clips)} clips under {', '.join(map(str, paths))} are excluded by {list(exclude)}")
    return kept


def _resize_short(img: np.ndarray, short: int) -> np.ndarray:
    h, w = img.shape[:2]
    if min(h, w) <= short:
        return img
    s = short / min(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


class PairDataset(Dataset[tuple[torch.Tensor, ...]]):
    """Item key (index, epoch) → (ref, tar) uint8 3×S×S tensors with identical crop/scale/flip.

    Index i enumerates (clip, target frame t) for every t ≥ gap_max, so all gaps fit in every clip.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        size: int = 256,
        gap: int = 5,
        gap_range: tuple[int, int] | None = None,
        seed: int = 0,
        scale_range: tuple[float, float] = (0.6, 1.0),
        flip: bool = True,
        cache_short: int | None = None,
        cache_mb: int = 1024,
        teacher: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        lo, hi = gap_range if gap_range is not None else (gap, gap)
        if not 1 <= lo <= hi:
            raise ValueError(f"gap must be >= 1 and gap range ordered, got {gap_range or gap}")
        if not 0 < scale_range[0] <= scale_range[1] <= 1:
            raise ValueError(f"scale range must satisfy 0 < lo <= hi <= 1, got {scale_range}")
        self.clips = list(clips)
        self.size, self.gap_min, self.gap_max, self.seed = size, lo, hi, seed
        self.scale_range, self.flip = scale_range, flip
        self.cache_short = cache_short or size
        self.cache_bytes = cache_mb * 2**20
        self.teacher = teacher  # e.g. DISTeacher: runs in the worker on the augmented pair
        usable = [max(0, c.num_frames - hi) for c in self.clips]
        if sum(usable) == 0:
            longest = max(c.num_frames for c in self.clips)
            raise ValueError(f"no clip is longer than the gap {hi} (longest has {longest} frames)")
        self._offsets = np.cumsum([0, *usable])
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()  # per worker process (not shared)
        self._cached_bytes = 0

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _decode_video(self, ci: int) -> np.ndarray:
        clip = self.clips[ci]
        frames: list[np.ndarray] = []
        try:
            with av.open(str(clip.path)) as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                for vf in c.decode(stream):
                    s = self.cache_short / min(vf.width, vf.height)
                    if s < 1:  # scale inside FFmpeg: cheaper than converting full frames
                        vf = vf.reformat(width=max(1, round(vf.width * s)) // 2 * 2,
                                         height=max(1, round(vf.height * s)) // 2 * 2)
                    frames.append(vf.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as e:
            if not frames:
                raise ValueError(f"cannot decode video {clip.path}: {type(e).__name__}") from None
        if not frames:
            raise ValueError(f"no frames decoded from {clip.path}")
        return np.stack(frames)

    def _video_frames(self, ci: int) -> np.ndarray:
        if ci in self._cache:
            self._cache.move_to_end(ci)
            return self._cache[ci]
        arr = self._decode_video(ci)
        while self._cache and self._cached_bytes + arr.nbytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
        self._cache[ci] = arr
        self._cached_bytes += arr.nbytes
        return arr

    def _read_image(self, path: Path) -> np.ndarray:
        bgr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise ValueError(f"cannot decode image: {path}")
        return _resize_short(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.cache_short)

    def locate(self, index: int) -> tuple[int, int]:
        """Dataset index → (clip index, target frame t)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        ci = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return ci, int(index - self._offsets[ci]) + self.gap_max

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, ...]:
        """(ref, tar) uint8 3×S×S; with a teacher also its (2×S/4×S/4 flow, 1×S/4×S/4 weight)."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        ci, t = self.locate(int(index))
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        gap = int(rng.integers(self.gap_min, self.gap_max + 1))
        clip = self.clips[ci]
        if clip.kind == "video":
            frames = self._video_frames(ci)
            t = min(t, len(frames) - 1)  # decoded count can fall short of the container's claim
            ref, tar = frames[max(0, t - gap)], frames[t]
        else:
            ref, tar = self._read_image(clip.files[t - gap]), self._read_image(clip.files[t])
        if ref.shape != tar.shape:
            raise ValueError(f"{clip.path}: frames {t - gap} and {t} differ in size")
        a, b = self._augment(ref, tar, rng)
        if self.teacher is None:
            return a, b
        flow, weight = self.teacher(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy())
        return a, b, flow, weight

    def _augment(self, ref: np.ndarray, tar: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One square crop (random scale of the short side and position), resize to S, optional flip: both frames."""
        h, w = ref.shape[:2]
        side = max(1, round(min(h, w) * rng.uniform(*self.scale_range)))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        flip = self.flip and bool(rng.integers(0, 2))
        out = []
        for img in (ref, tar):
            crop = img[y:y + side, x:x + side]
            interp = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (self.size, self.size), interpolation=interp)
            if flip:
                crop = crop[:, ::-1]
            out.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        return out[0], out[1]


class PairSampler(Sampler[tuple[int, int]]):
    """Endless (index, epoch) keys; permutation depends only on (seed, epoch); rank shard; resumable offset.

    `consumed` counts samples this rank already took, so resuming skips exactly those.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, consumed: int = 0) -> None:
        if n <= 0:
            raise ValueError(f"sampler needs a non-empty dataset, got {n} items")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.per_rank = -(-n // world_size)  # pad like DistributedSampler so every rank gets the same count
        self.consumed = consumed

    def _shard(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        total = self.per_rank * self.world
        perm = (perm * -(-total // self.n))[:total]  # pad by wrapping, even when n < world_size
        return perm[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.consumed, self.per_rank)
        while True:
            for i in self._shard(epoch)[offset:]:
                yield i, epoch
            epoch, offset = epoch + 1, 0
