"""Classical optical flow (OpenCV DIS) as a displacement field: the baseline, the prior and the teacher.

One definition of every DIS preset the project uses. Each is OpenCV's preset plus, for the two of our own,
one changed parameter; all were measured on the dev set through the Segmenter's soft propagator
(docs/training.md):

- ``ultrafast`` / ``fast`` / ``medium``: OpenCV's presets, unchanged (the baselines).
- ``ultrafast-fine``: ultrafast with its finest pyramid level at 1/2 instead of 1/4 resolution. About 2×
  ultrafast's time and above ``medium`` on dev: the prior of the ``rpmnet_dis`` models.
- ``ultrafast-full``: ultrafast down to full resolution (finest scale 0): ~5× ultrafast-fine's time.
- ``medium-fine``: medium down to full resolution (finest scale 0). ~100 ms per 854×480 frame on one
  core, too slow to run live; the teacher whose fields are precomputed once per training clip.

Every field here is *backward*: for frame t and the previous frame, ``flow[y, x] = (dx, dy)`` says that pixel
(x, y) of t came from (x + dx, y + dy) of t−1, in frame pixels: the convention of D4.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FLOW_PRESETS", "FlowPreset", "DISFlow", "to_gray", "MIN_SIDE", "resize_field", "field_to_grid"]

MIN_SIDE = 32  # frames smaller than this on a side are padded (replicated) before DIS


@dataclass(frozen=True)
class FlowPreset:
    base: int  # cv2.DISOPTICAL_FLOW_PRESET_*
    finest_scale: int | None = None  # None: the base preset's own

    def key(self) -> str:
        """What identifies the field this preset produces (cache keys)."""
        return f"dis{self.base}-fs{self.finest_scale}-cv{cv2.__version__}"


FLOW_PRESETS: dict[str, FlowPreset] = {
    "ultrafast": FlowPreset(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
    "fast": FlowPreset(cv2.DISOPTICAL_FLOW_PRESET_FAST),
    "medium": FlowPreset(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),
    "ultrafast-fine": FlowPreset(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, finest_scale=1),
    "ultrafast-full": FlowPreset(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, finest_scale=0),
    "medium-fine": FlowPreset(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, finest_scale=0),
}


def to_gray(frame: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB → H×W uint8, what DIS works on."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class DISFlow:
    """A DIS instance for one stream (it keeps scratch buffers, so one per thread)."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in FLOW_PRESETS:
            raise ValueError(f"unknown flow preset {preset!r}; expected one of {', '.join(FLOW_PRESETS)}")
        self.preset = preset
        spec = FLOW_PRESETS[preset]
        self._dis = cv2.DISOpticalFlow_create(spec.base)  # type: ignore[attr-defined]
        if spec.finest_scale is not None:
            self._dis.setFinestScale(spec.finest_scale)

    def __call__(self, gray: np.ndarray, prev_gray: np.ndarray) -> np.ndarray:
        """Backward field of frame t (``gray``) into t−1 (``prev_gray``): H×W×2 float32 (dx, dy)."""
        if gray.shape != prev_gray.shape or gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(
                f"DIS expects two H×W uint8 frames of one size, got {gray.dtype} {gray.shape} and "
                f"{prev_gray.dtype} {prev_gray.shape}"
            )
        h, w = gray.shape
        if h < MIN_SIDE or w < MIN_SIDE:  # DIS needs a few patches per level: pad tiny frames (1×1 included)
            pad = dict(top=0, bottom=max(0, MIN_SIDE - h), left=0, right=max(0, MIN_SIDE - w),
                       borderType=cv2.BORDER_REPLICATE)
            big = self._dis.calc(cv2.copyMakeBorder(gray, **pad), cv2.copyMakeBorder(prev_gray, **pad), None)
            return np.ascontiguousarray(big[:h, :w])
        return self._dis.calc(gray, prev_gray, None)


def resize_field(field: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """H×W×2 (dx, dy) field → h×w×2, area-resampled, displacements rescaled to the new grid's pixels."""
    fh, fw = field.shape[:2]
    h, w = int(hw[0]), int(hw[1])
    out = cv2.resize(field, (w, h), interpolation=cv2.INTER_AREA)
    out[..., 0] *= w / fw
    out[..., 1] *= h / fh
    return out


def field_to_grid(field: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A DIS field (H×W×2, (dx, dy) in frame px) in the model's layout on ``grid``: 2×h×w (dy, dx) in grid px.
    The one conversion used at inference (the prior fed to the network) and in training."""
    small = resize_field(field, grid)
    return np.ascontiguousarray(small[..., ::-1].transpose(2, 0, 1))
