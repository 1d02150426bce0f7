"""COCO run-length encoding of binary masks, byte-compatible with pycocotools' ``encode``/``decode``.

A mask is read in column-major (Fortran) order as alternating runs of 0s and 1s, starting with 0s; the run
lengths are packed into pycocotools' compressed string (5 bits per character, deltas from the run two back).
Written here so results can be exchanged with COCO tools without a C extension.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from .base import InputError

__all__ = ["RLE", "object_boxes", "rle_area", "rle_decode", "rle_encode"]


class RLE(TypedDict):
    size: list[int]  # [height, width]
    counts: str


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def _pack(counts: list[int]) -> str:
    out = bytearray()
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(ch + 48)
    return out.decode("ascii")


def _unpack(s: str) -> list[int]:
    counts: list[int] = []
    data = s.encode("ascii")
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            if p >= len(data):
                raise InputError("RLE counts string ends inside a run length")
            ch = data[p] - 48
            x |= (ch & 0x1F) << (5 * k)
            more = bool(ch & 0x20)
            p += 1
            k += 1
            if not more and ch & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray) -> RLE:
    """H×W mask (bool or 0/non-0) → ``{"size": [H, W], "counts": str}``."""
    if mask.ndim != 2:
        raise InputError(f"rle_encode needs an HxW mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _pack(_runs(mask))}


def rle_decode(rle: RLE) -> np.ndarray:
    """The H×W bool mask of an RLE (compressed string or a list of run lengths)."""
    h, w = (int(v) for v in rle["size"])
    raw = rle["counts"]
    counts = _unpack(raw) if isinstance(raw, str) else [int(c) for c in raw]
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise InputError(f"RLE runs cover {sum(counts)} pixels, expected {h}x{w} = {h * w}")
    flat = np.zeros(h * w, dtype=bool)
    pos = 0
    for i, c in enumerate(counts):
        if i % 2:
            flat[pos : pos + c] = True
        pos += c
    return flat.reshape((w, h)).T


def rle_area(rle: RLE) -> int:
    raw = rle["counts"]
    counts = _unpack(raw) if isinstance(raw, str) else [int(c) for c in raw]
    return int(sum(counts[1::2]))


def object_boxes(ids_mask: np.ndarray, ids: tuple[int, ...] | list[int]) -> np.ndarray:
    """K×4 float32 (x1, y1, x2, y2) boxes of each id in ``ids`` (x2, y2 exclusive); NaN rows for absent ids."""
    out = np.full((len(ids), 4), np.nan, dtype=np.float32)
    for k, obj in enumerate(ids):
        m = ids_mask == obj
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            out[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out
