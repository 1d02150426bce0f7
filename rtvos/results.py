"""`Result`: one segmented frame as a Python user gets it from `rtvos.track` — masks, boxes, scores, timings,
with `plot()`, `save()` and `to_json()` (COCO RLE per object).

Built from the pipeline's `SegmentedFrame` (the same object every sink sees), so what a script gets and what
`rtvos segment` writes are the same masks. Per-object arrays are computed on first use: a loop that only
reads `mask` pays for nothing else.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .io.masks import write_mask
from .io.overlay import DISPLAY_PALETTE, overlay
from .io.record import frame_record
from .io.rle import object_boxes
from .io.sinks import SegmentedFrame

__all__ = ["Result"]


class Result:
    """One frame's segmentation. ``ids`` are the tracked object ids (background excluded); every per-object
    array (``masks``, ``boxes``, ``areas``, ``scores``) is aligned with it. Images are RGB unless ``bgr``."""

    def __init__(self, item: SegmentedFrame, *, bgr: bool = False) -> None:
        self._item = item
        self.bgr = bgr
        self.frame_index: int = item.frame_index  # position in this run (0 = the prompted frame)
        self.source_index: int = item.frame.source_index  # the source's own index (live sources skip dropped ones)
        self.pts_s: float | None = item.frame.pts_s
        self.captured_s: float = item.captured_s
        self.mask: np.ndarray = item.mask  # H×W uint8 object ids
        self.ids: tuple[int, ...] = tuple(i for i in item.step.object_ids if i != 0)
        self.anchored: bool = item.step.anchored
        self.timings_ms: dict[str, float] = dict(item.stages_ms)  # decode/wait + model stages (sinks add theirs)
        self.step_ms: float = item.step_ms
        self.dropped: int = item.dropped

    # -- per-object views ------------------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        """The frame (H×W×3 uint8), RGB, or BGR when the run was started with ``bgr=True``."""
        img = self._item.frame.image
        return np.ascontiguousarray(img[..., ::-1]) if self.bgr else img

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @cached_property
    def masks(self) -> np.ndarray:
        """K×H×W bool, one binary mask per id in ``ids``."""
        if not self.ids:
            return np.zeros((0, *self.shape), dtype=bool)
        return self.mask[None] == np.asarray(self.ids, dtype=np.uint8)[:, None, None]

    @cached_property
    def areas(self) -> np.ndarray:
        """K int64 pixel counts (0: the object is lost in this frame)."""
        counts = np.bincount(self.mask.ravel(), minlength=256)
        return counts[list(self.ids)].astype(np.int64) if self.ids else np.zeros(0, np.int64)

    @cached_property
    def boxes(self) -> np.ndarray:
        """K×4 float32 (x1, y1, x2, y2) pixel boxes, x2/y2 exclusive; NaN rows for lost objects."""
        return object_boxes(self.mask, self.ids)

    @property
    def scores(self) -> np.ndarray | None:
        """K×H×W float32 per-object soft scores in [0, 1] where the model has them (soft propagation), else None."""
        return self._item.step.object_scores

    # -- outputs ---------------------------------------------------------------------------------------------
    def plot(self, *, boxes: bool = True, labels: bool = True, alpha: float = 0.5) -> np.ndarray:
        """The frame with each object coloured and outlined (H×W×3 uint8, RGB or BGR like ``image``)."""
        vis = overlay(self._item.frame.image, self.mask, alpha=alpha)  # display colours, as the overlay video
        for k, obj in enumerate(self.ids):
            if not boxes or np.isnan(self.boxes[k, 0]):
                continue
            x1, y1, x2, y2 = (int(v) for v in self.boxes[k])
            colour = tuple(int(c) for c in DISPLAY_PALETTE[obj])
            cv2.rectangle(vis, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
            if labels:
                cv2.putText(vis, str(obj), (x1 + 2, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                            cv2.LINE_AA)
        return np.ascontiguousarray(vis[..., ::-1]) if self.bgr else vis

    def save(self, folder: str | os.PathLike[str], *, overlay: bool = False) -> Path:
        """Write ``folder/%05d.png`` (the palette id mask, as `rtvos segment` names it); with ``overlay`` also
        ``%05d.jpg`` of `plot()`. Returns the mask's path."""
        root = Path(folder)
        path = root / f"{self.frame_index:05d}.png"
        write_mask(path, self.mask, self._item.palette)
        if overlay:
            vis = self.plot()
            cv2.imwrite(str(root / f"{self.frame_index:05d}.jpg"), vis if self.bgr else vis[..., ::-1])
        return path

    def to_json(self) -> dict[str, Any]:
        """The frame's JSON record (`rtvos.io.record.frame_record`, the layout of every `--jsonl` line): frame,
        timestamps, stage times, and per object its id, area, box and COCO RLE."""
        return frame_record(self._item)

    def __repr__(self) -> str:
        h, w = self.shape
        objs = ", ".join(f"{i}: {a} px" if a else f"{i}: lost" for i, a in zip(self.ids, self.areas.tolist()))
        tag = " anchored" if self.anchored else ""
        return f"Result(frame_index={self.frame_index}{tag}, {w}x{h}, objects {{{objs}}}, step {self.step_ms:.1f} ms)"
