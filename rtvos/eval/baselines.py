"""Label-free reference points for the benchmark tables: how far does no learning get?

Both follow the Segmenter's streaming contract: ``step(frame, mask=None)`` with ``frame`` an H×W×3 uint8 RGB
image and ``mask`` an H×W uint8 id mask on the first frame (or later, to re-anchor); returns H×W uint8 ids.
Both are causal: frame t never sees frame t+1.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..flow import DISFlow

__all__ = ["CopyBaseline", "FlowBaseline"]


def _check(frame: np.ndarray, mask: np.ndarray | None) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be H×W×3 uint8 RGB, got {frame.dtype} {frame.shape}")
    if mask is not None and (mask.ndim != 2 or mask.shape != frame.shape[:2]):
        raise ValueError(f"mask must be H×W matching the frame {frame.shape[:2]}, got {mask.shape}")


class CopyBaseline:
    """Repeats the last given mask: the score of a method that ignores the video entirely."""

    name = "copy"

    def __init__(self) -> None:
        self._mask: np.ndarray | None = None

    def reset(self) -> None:
        self._mask = None

    def step(self, frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        _check(frame, mask)
        if mask is not None:
            self._mask = np.ascontiguousarray(mask, dtype=np.uint8).copy()
        elif self._mask is None:
            raise RuntimeError("no mask yet: pass mask= with the first frame")
        elif self._mask.shape != frame.shape[:2]:
            raise ValueError(f"frame size changed from {self._mask.shape} to {frame.shape[:2]}; call reset()")
        return self._mask.copy()


class FlowBaseline:
    """Propagates the previous mask with DIS optical flow: the classic hand-crafted matching baseline.

    Flow is computed from frame t to frame t-1 (grayscale), so every pixel of t looks up where it came from;
    the previous mask's one-hot planes (background included) are backward-warped bilinearly and the argmax
    gives the new ids. Pixels whose source is outside the image take the nearest border value.
    """

    name = "flow"

    def __init__(self, preset: str = "medium") -> None:
        self._dis = DISFlow(preset)
        self._labels: np.ndarray | None = None  # (L,) uint8 ids, background first
        self._index: np.ndarray | None = None  # H×W indices into _labels: the mask at t-1
        self._prev_gray: np.ndarray | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._labels = self._index = self._prev_gray = None

    def step(self, frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        _check(frame, mask)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if mask is not None:
            m = np.ascontiguousarray(mask, dtype=np.uint8)
            self._labels = np.union1d(np.zeros(1, np.uint8), np.unique(m)).astype(np.uint8)
            self._index = np.searchsorted(self._labels, m).astype(np.int64)
            self._prev_gray = gray
            return m.copy()
        if self._index is None or self._prev_gray is None or self._labels is None:
            raise RuntimeError("no mask yet: pass mask= with the first frame")
        if self._prev_gray.shape != gray.shape:
            raise ValueError(f"frame size changed from {self._prev_gray.shape} to {gray.shape}; call reset()")
        flow = self._dis(gray, self._prev_gray)  # pixel x of t came from x + flow(x) in t-1
        gx, gy = self._grid_for(gray.shape)
        map_x = gx + flow[..., 0]
        map_y = gy + flow[..., 1]
        n = len(self._labels)
        onehot = (self._index[..., None] == np.arange(n)).astype(np.float32)
        warped = cv2.remap(onehot, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if warped.ndim == 2:  # a single plane (no object) comes back without its channel axis
            warped = warped[..., None]
        self._index = np.argmax(warped, axis=-1)
        self._prev_gray = gray
        return self._labels[self._index]

    def _grid_for(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        h, w = shape[:2]
        if self._grid is None or self._grid[0].shape != (h, w):
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = (gx, gy)
        return self._grid
