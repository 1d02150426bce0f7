"""First mask from a box: ``--box x,y,w,h`` or a box dragged in the live view.

Streaming VOS needs a first-frame mask, and a box is the cheapest thing a
user can give. OpenCV's GrabCut turns the box into an object mask without
any model; when it finds nothing (flat colours, a box that covers the whole
frame) the filled box itself is used, so the stream can always start.

GrabCut is O(pixels × iterations) and takes hundreds of ms on a 480p frame
on a small CPU, so frames larger than ``MAX_GRABCUT_SIDE`` are segmented on
a downscaled copy and the mask is upscaled (smoothly, then thresholded) and
clipped to the box.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from .base import InputError

__all__ = ["MAX_GRABCUT_SIDE", "box_to_mask", "check_box", "parse_box"]

#: Longest side GrabCut runs at; larger frames are downscaled first (see module doc).
MAX_GRABCUT_SIDE = 640

Box = tuple[int, int, int, int]

_INT = r"\s*([+-]?\d+)\s*"
_BOX_RE = re.compile(rf"^{_INT},{_INT},{_INT},{_INT}$")


def check_box(box: tuple[int, int, int, int], frame_size: tuple[int, int] | None = None) -> Box:
    """Validate an (x, y, w, h) box of ints; ``frame_size`` is (height, width) as ``image.shape[:2]``."""
    if len(box) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in box):
        raise InputError(f"box must be 4 integers x,y,w,h, got {box!r}")
    x, y, w, h = (int(v) for v in box)
    text = f"{x},{y},{w},{h}"
    if w <= 0 or h <= 0:
        raise InputError(f"box {text} must have a positive width and height")
    if x < 0 or y < 0:
        raise InputError(f"box {text} starts outside the frame (x and y must be >= 0)")
    if frame_size is not None:
        fh, fw = (int(s) for s in frame_size)
        if x + w > fw or y + h > fh:
            raise InputError(
                f"box {text} reaches ({x + w},{y + h}), outside the {fw}x{fh} frame (width x height)"
            )
    return (x, y, w, h)


def parse_box(text: str, frame_size: tuple[int, int] | None = None) -> Box:
    """Parse ``"x,y,w,h"`` (pixels, top-left corner + size); ``frame_size`` = (height, width)."""
    m = _BOX_RE.match(str(text))
    if m is None:
        raise InputError(f"box {text!r} is not 'x,y,w,h' (four integers separated by commas)")
    return check_box(tuple(int(g) for g in m.groups()), frame_size)  # type: ignore[arg-type]


def box_to_mask(image_rgb: np.ndarray, box: tuple[int, int, int, int], iterations: int = 5) -> np.ndarray:
    """H×W uint8 {0, 1} object mask from a box via GrabCut; the filled box when GrabCut finds nothing."""
    if not (isinstance(image_rgb, np.ndarray) and image_rgb.ndim == 3 and image_rgb.shape[2] == 3):
        got = getattr(image_rgb, "shape", type(image_rgb).__name__)
        raise InputError(f"box_to_mask needs an HxWx3 image, got {got}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    height, width = image_rgb.shape[:2]
    x, y, w, h = check_box(box, (height, width))
    rect_mask = np.zeros((height, width), np.uint8)
    rect_mask[y : y + h, x : x + w] = 1

    scale = min(1.0, MAX_GRABCUT_SIDE / max(height, width))
    img = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    if scale < 1.0:
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        img = cv2.resize(img, small, interpolation=cv2.INTER_AREA)
    sh, sw = img.shape[:2]
    sx, sy = sw / width, sh / height
    x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
    x1, y1 = min(sw, int(np.ceil((x + w) * sx))), min(sh, int(np.ceil((y + h) * sy)))
    rect = (x0, y0, x1 - x0, y1 - y0)
    # GrabCut needs background samples outside the rect and a rect of a few pixels.
    if rect[2] < 3 or rect[3] < 3 or (rect[2] >= sw and rect[3] >= sh):
        return rect_mask

    gc = np.zeros((sh, sw), np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(img, gc, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # degenerate colour models (e.g. a constant image): fall back to the box
        return rect_mask
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    if scale < 1.0:
        up = cv2.resize(fg.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        fg = (up >= 0.5).astype(np.uint8)
    fg &= rect_mask  # upscaling may bleed a pixel past the box
    if not fg.any():
        return rect_mask
    return fg
