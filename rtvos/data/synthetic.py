"""Synthetic clips with exact ground-truth masks for tests and smoke runs.

Real VOS data is large and licensed; tests across the project need a clip
that is tiny, deterministic, and has masks that are *exactly* right. Each
object is a textured ellipse whose texture moves with it (sampled in
object coordinates), pasted over a differently textured, slowly drifting
background. The mask of a frame is precisely the set of pixel centres
inside the pasted ellipses, with later objects occluding earlier ones.
The default motion (~2 px/frame straight line, no wall bounce within 24
frames) moves the object far enough that copying the first mask to the
last frame gives IoU well below 0.5.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..io.masks import DAVIS_PALETTE, write_mask
from ..io.writer import VideoWriter

__all__ = [
    "SyntheticClip",
    "SyntheticClipPaths",
    "ellipse_mask",
    "make_synthetic_clip",
    "make_scene_clip",
    "write_synthetic_clip",
]

Motion = Literal["linear", "circular", "static"]


@dataclass
class SyntheticClip:
    """Frames (H×W×3 uint8 RGB) and exact id masks (H×W uint8) plus geometry.

    ``centers[t, k]`` is object k's centre (x, y) in pixels at frame t,
    ``angles[t, k]`` its orientation in radians, ``axes[k]`` its semi-axes
    (a, b); object k is drawn after objects < k and carries id ``ids[k]``.
    """

    frames: list[np.ndarray]
    masks: list[np.ndarray]
    ids: tuple[int, ...]
    centers: np.ndarray
    angles: np.ndarray
    axes: np.ndarray
    fps: float = 24.0
    palette: np.ndarray = field(default_factory=lambda: DAVIS_PALETTE.copy())

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return (h, w)


@dataclass(frozen=True)
class SyntheticClipPaths:
    """Where :func:`write_synthetic_clip` put things (None = not written)."""

    root: Path
    video: Path | None
    frames_dir: Path | None
    masks_dir: Path
    first_mask: Path
    mask_files: tuple[Path, ...]


def ellipse_mask(
    height: int, width: int, center: Sequence[float], axes: Sequence[float], angle: float
) -> np.ndarray:
    """Pixel centres (integer x, y) inside the rotated ellipse; the exact shape drawn."""
    u, v = _object_coords(np.arange(height)[:, None], np.arange(width)[None, :], center, angle)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0


def _object_coords(
    ys: np.ndarray, xs: np.ndarray, center: Sequence[float], angle: float
) -> tuple[np.ndarray, np.ndarray]:
    # float64 throughout so ellipse_mask and the renderer agree bit for bit.
    dx = xs.astype(np.float64) - float(center[0])
    dy = ys.astype(np.float64) - float(center[1])
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _smooth_noise(
    rng: np.random.Generator,
    height: int,
    width: int,
    cell: float,
    mean: np.ndarray,
    amplitude: float,
    chroma: float = 1.0,
) -> np.ndarray:
    """Band-limited colour noise: random grid upsampled bicubically.

    ``chroma`` < 1 mixes in a shared luminance component so the texture is
    less colourful (a muted background makes objects stand out).
    """
    gh = max(2, int(math.ceil(height / cell)) + 2)
    gw = max(2, int(math.ceil(width / cell)) + 2)
    grid = rng.standard_normal((gh, gw, 3)).astype(np.float32)
    lum = rng.standard_normal((gh, gw, 1)).astype(np.float32)
    grid = chroma * grid + (1.0 - chroma) * lum
    tex: np.ndarray = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    tex *= amplitude / max(float(tex.std()), 1e-6)
    return np.clip(tex + mean.astype(np.float32), 0, 255)


def _reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold an unbounded 1-D path into [lo, hi] (bounce off the walls)."""
    if hi <= lo:
        return np.full_like(p, (lo + hi) / 2)
    period = 2 * (hi - lo)
    q = np.mod(p - lo, period)
    return lo + np.where(q > hi - lo, period - q, q)


def _trajectory(
    rng: np.random.Generator,
    motion: str,
    t: np.ndarray,
    speed: float,
    box: tuple[float, float, float, float],
) -> np.ndarray:
    """Centre path (T, 2) inside box=(x_lo, x_hi, y_lo, y_hi) moving at ``speed`` px/frame."""
    x_lo, x_hi, y_lo, y_hi = box
    if motion == "static":
        p0 = np.array([rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)])
        return np.repeat(p0[None], len(t), axis=0)
    if motion == "linear":
        phi = rng.uniform(0, 2 * math.pi)
        vel = speed * np.array([math.cos(phi), math.sin(phi)])
        span = vel * (len(t) - 1)
        starts = []
        for lo, hi, d in ((x_lo, x_hi, span[0]), (y_lo, y_hi, span[1])):
            # Start so the whole path fits (no bounce) when it can; else start at a wall.
            s_lo, s_hi = lo - min(d, 0.0), hi - max(d, 0.0)
            starts.append(rng.uniform(s_lo, s_hi) if s_lo <= s_hi else (lo if d > 0 else hi))
        raw = np.array(starts)[None, :] + t[:, None] * vel[None, :]
        return np.stack([_reflect(raw[:, 0], x_lo, x_hi), _reflect(raw[:, 1], y_lo, y_hi)], axis=1)
    if motion == "circular":
        radius = max(min(x_hi - x_lo, y_hi - y_lo) / 2, 1e-3)
        cx, cy = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
        omega = (speed / radius) * (1 if rng.random() < 0.5 else -1)
        phase = rng.uniform(0, 2 * math.pi)
        ang = phase + omega * t
        return np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], axis=1)
    raise ValueError(f"unknown motion {motion!r}; expected 'linear', 'circular' or 'static'")


def make_synthetic_clip(
    num_frames: int = 24,
    height: int = 128,
    width: int = 160,
    num_objects: int = 1,
    seed: int = 0,
    motion: Motion = "linear",
    *,
    speed: float = 2.0,
    ids: Sequence[int] | None = None,
    background_speed: float = 0.5,
    rotation_deg: float = 0.0,
    noise_std: float = 0.0,
    fps: float = 24.0,
) -> SyntheticClip:
    """Render a deterministic clip of textured ellipses over a textured background.

    ``speed`` is the object speed in px/frame ("linear": straight line,
    bouncing only if the clip is too long to fit; "circular": constant
    speed on a circle; "static": no motion). ``background_speed`` drifts
    the background (px/frame), ``rotation_deg`` spins objects per frame,
    ``noise_std`` adds per-frame Gaussian pixel noise. ``ids`` gives
    custom (possibly non-contiguous) object ids, default 1..K.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height < 16 or width < 16:
        raise ValueError(f"clip must be at least 16x16, got {height}x{width}")
    if not 1 <= num_objects <= 255:
        raise ValueError(f"num_objects must be in 1..255, got {num_objects}")
    if ids is None:
        obj_ids = tuple(range(1, num_objects + 1))
    else:
        obj_ids = tuple(int(i) for i in ids)
        if len(obj_ids) != num_objects:
            raise ValueError(f"got {len(obj_ids)} ids for {num_objects} objects")
        if len(set(obj_ids)) != len(obj_ids) or not all(1 <= i <= 255 for i in obj_ids):
            raise ValueError(f"ids must be distinct integers in 1..255, got {list(obj_ids)}")
    if speed < 0 or background_speed < 0:
        raise ValueError("speed and background_speed must be >= 0")

    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64)
    short = min(height, width)

    # Background: larger than the frame so a drifting window never leaves it.
    margin = int(math.ceil(background_speed * num_frames)) + 2
    bg_mean = rng.uniform(70, 150, size=3)
    background = _smooth_noise(
        rng, height + 2 * margin, width + 2 * margin, cell=14, mean=bg_mean, amplitude=30, chroma=0.35
    )
    psi = rng.uniform(0, 2 * math.pi)
    bg_offsets = background_speed * t[:, None] * np.array([math.cos(psi), math.sin(psi)])[None, :]

    # Objects: geometry, textures (in object coordinates) and trajectories.
    scale = 1.0 if num_objects == 1 else max(0.5, 1.0 / math.sqrt(num_objects))
    axes = np.zeros((num_objects, 2))
    angles = np.zeros((num_frames, num_objects))
    centers = np.zeros((num_frames, num_objects, 2))
    textures: list[np.ndarray] = []
    for k in range(num_objects):
        a = max(3.0, short * rng.uniform(0.13, 0.2) * scale)
        b = max(2.5, a * rng.uniform(0.55, 0.9))
        axes[k] = (a, b)
        theta0 = rng.uniform(0, math.pi)
        angles[:, k] = theta0 + math.radians(rotation_deg) * t
        # Half-extents of the rotated ellipse (a bounds them when it spins), so
        # the whole object stays in frame and masks are never clipped.
        c, s = math.cos(theta0), math.sin(theta0)
        ex = a if rotation_deg else math.hypot(a * c, b * s)
        ey = a if rotation_deg else math.hypot(a * s, b * c)
        box = (ex + 1, width - 2 - ex, ey + 1, height - 2 - ey)
        centers[:, k] = _trajectory(rng, motion, t, speed, box)
        hue = rng.uniform(0, 1)
        base = 255 * np.array([_hue_channel(hue + off) for off in (0.0, 2 / 3, 1 / 3)])
        size = int(math.ceil(a)) * 2 + 5
        mean = 0.25 * bg_mean + 0.75 * base
        textures.append(_smooth_noise(rng, size, size, cell=max(3.0, a / 4), mean=mean, amplitude=45))

    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    grid_x = np.broadcast_to(xs, (height, width)).astype(np.float32)
    grid_y = np.broadcast_to(ys, (height, width)).astype(np.float32)
    noise_rng = np.random.default_rng([seed, 1])
    frames: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for f in range(num_frames):
        ox, oy = bg_offsets[f]
        img: np.ndarray = cv2.remap(
            background,
            grid_x + np.float32(margin + ox),
            grid_y + np.float32(margin + oy),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        mask = np.zeros((height, width), dtype=np.uint8)
        for k, obj_id in enumerate(obj_ids):
            # Only the object's bounding box is evaluated; membership uses the
            # same float64 formula as ellipse_mask, so masks are exact.
            cx, cy = centers[f, k]
            r = axes[k, 0] + 1
            x0, x1 = max(0, int(math.floor(cx - r))), min(width, int(math.ceil(cx + r)) + 1)
            y0, y1 = max(0, int(math.floor(cy - r))), min(height, int(math.ceil(cy + r)) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            u, v = _object_coords(ys[y0:y1], xs[:, x0:x1], centers[f, k], angles[f, k])
            inside = (u / axes[k, 0]) ** 2 + (v / axes[k, 1]) ** 2 <= 1.0
            tex = textures[k]
            half = (tex.shape[0] - 1) / 2
            sampled = cv2.remap(
                tex,
                (u + half).astype(np.float32),
                (v + half).astype(np.float32),
                interpolation=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
            img[y0:y1, x0:x1][inside] = sampled[inside]
            mask[y0:y1, x0:x1][inside] = obj_id
        if noise_std > 0:
            img = img + noise_rng.normal(0.0, noise_std, img.shape).astype(np.float32)
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        masks.append(mask)
    return SyntheticClip(
        frames=frames,
        masks=masks,
        ids=obj_ids,
        centers=centers,
        angles=angles,
        axes=axes,
        fps=float(fps),
    )


def make_scene_clip(
    tracks: Sequence[tuple[tuple[float, float], tuple[float, float], float]],
    colours: Sequence[tuple[int, int, int]],
    num_frames: int = 48,
    height: int = 120,
    width: int = 200,
    occluders: Sequence[tuple[int, int, int, int]] = (),
    seed: int = 0,
    fps: float = 24.0,
) -> SyntheticClip:
    """Scripted scenes for the appearance tests: textured discs moving in straight lines over a muted textured
    background, behind static grey occluders.

    ``tracks[k]`` = ((x0, y0), (x1, y1), radius): object k's centre goes from the first point at frame 0 to the
    second at the last frame; ``colours[k]`` is its mean RGB (textured ±25). Later objects pass in front of
    earlier ones; every ``occluders`` box (x0, y0, x1, y1) is drawn last, over all objects. Masks are exact.
    """
    if len(tracks) != len(colours) or not tracks:
        raise ValueError(f"need one colour per track, got {len(tracks)} tracks and {len(colours)} colours")
    rng = np.random.default_rng(seed)
    background = _smooth_noise(rng, height, width, cell=12, mean=np.array([90.0, 120.0, 100.0]), amplitude=22,
                               chroma=0.3)
    occ_tex = _smooth_noise(rng, height, width, cell=6, mean=np.array([128.0, 128.0, 128.0]), amplitude=18,
                            chroma=0.0)
    textures = [_smooth_noise(rng, height, width, cell=5, mean=np.array(c, np.float64), amplitude=25, chroma=0.5)
                for c in colours]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    k_count = len(tracks)
    centers = np.zeros((num_frames, k_count, 2))
    frames: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for f in range(num_frames):
        a = f / max(1, num_frames - 1)
        img = background.copy()
        mask = np.zeros((height, width), np.uint8)
        for k, ((x0, y0), (x1, y1), r) in enumerate(tracks):
            cx, cy = x0 + a * (x1 - x0), y0 + a * (y1 - y0)
            centers[f, k] = (cx, cy)
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
            shift = np.float32(cx - x0), np.float32(cy - y0)  # the texture moves with the disc
            tex = cv2.remap(textures[k], (xs - shift[0]).astype(np.float32), (ys - shift[1]).astype(np.float32),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            img[inside] = tex[inside]
            mask[inside] = k + 1
        for x0o, y0o, x1o, y1o in occluders:
            img[y0o:y1o, x0o:x1o] = occ_tex[y0o:y1o, x0o:x1o]
            mask[y0o:y1o, x0o:x1o] = 0
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        masks.append(mask)
    radii = np.array([[t[2], t[2]] for t in tracks], np.float64)
    return SyntheticClip(frames=frames, masks=masks, ids=tuple(range(1, k_count + 1)), centers=centers,
                         angles=np.zeros((num_frames, k_count)), axes=radii, fps=float(fps))


def _hue_channel(h: float) -> float:
    # Saturated colour wheel so objects stand out from the muted background.
    x = (h % 1.0) * 6
    return float(np.clip(abs(x - 3) - 1, 0, 1))


def write_synthetic_clip(
    clip: SyntheticClip,
    out_dir: str | os.PathLike[str],
    as_video: bool = True,
    as_frames: bool = True,
    frame_ext: str = "jpg",
) -> SyntheticClipPaths:
    """Write ``clip.mp4`` and/or ``frames/00000.<ext>`` plus ``masks/00000.png`` (DAVIS layout).

    Masks are always written (they are the ground truth). The MP4 is H.264
    and therefore lossy; use ``frame_ext="png"`` for lossless frames.
    """
    if not (as_video or as_frames):
        raise ValueError("nothing to write: set as_video and/or as_frames")
    ext = frame_ext.lower().lstrip(".")
    if ext not in ("jpg", "jpeg", "png", "bmp", "webp"):
        raise ValueError(f"unsupported frame extension {frame_ext!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    video: Path | None = None
    if as_video:
        video = root / "clip.mp4"
        with VideoWriter(video, clip.fps, size=clip.size) as writer:
            for frame in clip.frames:
                writer.write(frame)
    frames_dir: Path | None = None
    if as_frames:
        frames_dir = root / "frames"
        frames_dir.mkdir(exist_ok=True)
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in ("jpg", "jpeg") else []
        for i, frame in enumerate(clip.frames):
            ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise OSError(f"cannot encode frame {i} as {ext}")
            buf.tofile(frames_dir / f"{i:05d}.{ext}")
    masks_dir = root / "masks"
    mask_files = []
    for i, mask in enumerate(clip.masks):
        path = masks_dir / f"{i:05d}.png"
        write_mask(path, mask, clip.palette)
        mask_files.append(path)
    return SyntheticClipPaths(
        root=root,
        video=video,
        frames_dir=frames_dir,
        masks_dir=masks_dir,
        first_mask=mask_files[0],
        mask_files=tuple(mask_files),
    )
