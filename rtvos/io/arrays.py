"""Frames handed over as arrays: what `rtvos.track` takes besides paths, URLs and webcams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .base import Frame, FrameSourceBase, InputError

__all__ = ["ArraySource"]


class ArraySource(FrameSourceBase):
    """Frames handed over as arrays (a T×H×W×3 array, a list, or any iterable such as a generator).

    ``bgr=True`` takes OpenCV's channel order and converts to the RGB the model expects.
    """

    def __init__(self, frames: Iterable[np.ndarray] | np.ndarray, *, fps: float = 25.0, bgr: bool = False,
                 name: str = "frames") -> None:
        super().__init__()
        self.name = name
        self.fps = float(fps)
        self.bgr = bgr
        self.is_live = False
        self._frames = frames
        self.num_frames = len(frames) if isinstance(frames, (np.ndarray, Sequence)) else None
        self.size = (0, 0)
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise InputError(f"frames array must be TxHxWx3, got shape {frames.shape}")
            self.size = (int(frames.shape[1]), int(frames.shape[2]))

    def __iter__(self) -> Iterator[Frame]:
        size: tuple[int, ...] | None = None
        for i, img in enumerate(self._frames):
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise InputError(f"frame {i} must be an HxWx3 uint8 image, got shape {arr.shape} dtype {arr.dtype}")
            if size is not None and arr.shape != size:
                raise InputError(f"frame {i} is {arr.shape[1]}x{arr.shape[0]}, earlier frames {size[1]}x{size[0]}")
            size = arr.shape
            rgb = np.ascontiguousarray(arr[..., ::-1]) if self.bgr else arr
            yield Frame(image=rgb, source_index=i, pts_s=i / self.fps)

    def close(self) -> None:
        close = getattr(self._frames, "close", None)  # a generator handed in is closed with the run
        if callable(close):
            close()
