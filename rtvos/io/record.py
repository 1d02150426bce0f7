"""The per-frame JSON record: one layout, one builder, one schema (`frame.schema.json`, package data).

`Result.to_json()` and every line of the JSONL log (`JsonlSink`, `--jsonl`) are this record, so a script and a
log reader parse the same thing.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from .rle import object_boxes, rle_encode

if TYPE_CHECKING:
    from .sinks import SegmentedFrame

__all__ = ["frame_record", "frame_schema"]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def frame_record(item: SegmentedFrame, *, rle: bool = True) -> dict[str, Any]:
    """The JSON-ready record of one segmented frame (see `frame_schema()`); ``rle`` adds each object's COCO RLE."""
    ids = [i for i in item.step.object_ids if i != 0]
    boxes = object_boxes(item.mask, ids)
    counts = np.bincount(item.mask.ravel(), minlength=256)
    objects = []
    for k, box in zip(ids, boxes):
        obj: dict[str, Any] = {"id": int(k), "area": int(counts[k]), "box": None if np.isnan(box[0]) else [int(v) for v in box]}
        if rle:
            obj["rle"] = rle_encode(item.mask == k)
        objects.append(obj)
    return {
        "frame_index": item.frame_index,
        "source_index": item.frame.source_index,
        "pts_s": _r(item.frame.pts_s, 6),
        "captured_s": _r(item.captured_s, 6),
        "size": [int(item.mask.shape[0]), int(item.mask.shape[1])],
        "anchored": bool(item.step.anchored),
        "dropped": int(item.dropped),
        "step_ms": _r(item.step_ms),
        "stages_ms": {k: _r(v) for k, v in item.stages_ms.items()},
        "output_s": _r(item.output_s, 6),
        "latency_ms": _r(item.latency_ms),
        "objects": objects,
    }


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return (resources.files(__package__) / "frame.schema.json").read_text(encoding="utf-8")


def frame_schema() -> dict[str, Any]:
    """The record's JSON Schema (2020-12) as a fresh dict; the file is `rtvos/io/frame.schema.json`."""
    return dict(json.loads(_schema_text()))
