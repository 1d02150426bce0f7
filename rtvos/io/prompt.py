"""First mask from boxes and points: ``--box x1,y1,x2,y2`` (repeatable, one object each; ``--box-format xywh``
for x,y,w,h), ``--point x,y[,+|-]``, or boxes dragged in the live view.

Boxes come in as x1,y1,x2,y2 (`rtvos.common.BOX_FORMAT`) unless a format is named; :func:`box_from` is the one
conversion to the (x, y, w, h) GrabCut takes inside this module.

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

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import cv2
import numpy as np

from ..common import BOX_FORMAT, BOX_FORMATS
from .base import Frame, InputError
from .masks import DAVIS_PALETTE, read_mask

__all__ = ["MAX_GRABCUT_SIDE", "MAX_OBJECTS", "MaskLike", "Point", "box_from", "box_to_mask", "check_box",
           "check_box_format", "check_point", "check_prompts", "first_mask", "given_mask", "parse_box", "parse_point",
           "points_to_mask", "prompts_to_mask"]

#: The most objects one first mask can hold: ids 1..254 (a palette PNG has 256 entries; 255 marks "void" in DAVIS).
MAX_OBJECTS = 254

#: Longest side GrabCut runs at; larger frames are downscaled first (see module doc).
MAX_GRABCUT_SIDE = 640

Box = tuple[int, int, int, int]
Point = tuple[int, int, bool]  # x, y, positive (False: a background click)
#: A first mask as `rtvos.track` takes it: an array of object ids, a palette PNG's path, or a function of the frame.
MaskLike = np.ndarray | str | os.PathLike[str] | Callable[[Frame], np.ndarray]

_INT = r"\s*([+-]?\d+)\s*"
_BOX_RE = re.compile(rf"^{_INT},{_INT},{_INT},{_INT}$")


def check_box(box: tuple[int, int, int, int], frame_size: tuple[int, int] | None = None, *,
              shown: str | None = None) -> Box:
    """Validate an (x, y, w, h) box of ints; ``frame_size`` is (height, width) as ``image.shape[:2]``.
    ``shown`` is how the user wrote the box (the --box text, an (x1, y1, x2, y2) tuple), echoed in errors."""
    if len(box) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in box):
        raise InputError(f"box must be 4 integers x,y,w,h, got {shown or repr(box)}")
    x, y, w, h = (int(v) for v in box)
    text = shown if shown is not None else f"{x},{y},{w},{h}"
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


def check_box_format(fmt: str) -> str:
    """``fmt`` itself if it is a box format rtvos takes ("xyxy", "xywh"), else InputError naming them."""
    if fmt not in BOX_FORMATS:
        raise InputError(f"box format must be one of {', '.join(BOX_FORMATS)}, got {fmt!r}")
    return fmt


def box_from(values: tuple[int, ...] | list[int], fmt: str = BOX_FORMAT, frame_size: tuple[int, int] | None = None,
             *, shown: str | None = None) -> Box:
    """Four integers in ``fmt`` ("xyxy": corners x1,y1,x2,y2; "xywh": top-left corner and size) → the checked
    (x, y, w, h) box; ``frame_size`` = (height, width). Errors echo ``shown`` (the box as the user wrote it)."""
    fmt = check_box_format(fmt)
    vals = tuple(values)
    text = shown or ",".join(map(str, vals))
    if len(vals) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        raise InputError(f"box must be 4 integers {'x1,y1,x2,y2' if fmt == 'xyxy' else 'x,y,w,h'}, got {text}")
    a, b, c, d = (int(v) for v in vals)
    return check_box((a, b, c - a, d - b) if fmt == "xyxy" else (a, b, c, d), frame_size, shown=text)


def parse_box(text: str, frame_size: tuple[int, int] | None = None, *, fmt: str = BOX_FORMAT) -> Box:
    """Parse ``"x1,y1,x2,y2"`` (pixels, two corners; ``fmt="xywh"``: ``"x,y,w,h"``, top-left corner + size) into
    the checked (x, y, w, h) box; ``frame_size`` = (height, width)."""
    m = _BOX_RE.match(str(text))
    if m is None:
        form = "x1,y1,x2,y2" if check_box_format(fmt) == "xyxy" else "x,y,w,h"
        raise InputError(f"box {text!r} is not '{form}' (four integers separated by commas)")
    return box_from(tuple(int(g) for g in m.groups()), fmt, frame_size, shown=str(text).strip())


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
    img: np.ndarray = np.ascontiguousarray(image_rgb, dtype=np.uint8)
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


_POINT_RE = re.compile(rf"^{_INT},{_INT}(?:,\s*([+-]|1|0|pos|neg)\s*)?$")


def check_point(point: tuple[int, ...], frame_size: tuple[int, int] | None = None) -> Point:
    """Validate (x, y) or (x, y, positive); ``frame_size`` is (height, width)."""
    if len(point) not in (2, 3) or not all(isinstance(v, (int, np.integer, bool)) for v in point):
        raise InputError(f"point must be x,y or x,y,positive (integers), got {point!r}")
    x, y = int(point[0]), int(point[1])
    positive = bool(point[2]) if len(point) == 3 else True
    if x < 0 or y < 0:
        raise InputError(f"point {x},{y} is outside the frame (x and y must be >= 0)")
    if frame_size is not None and (x >= frame_size[1] or y >= frame_size[0]):
        raise InputError(f"point {x},{y} is outside the {frame_size[1]}x{frame_size[0]} frame (width x height)")
    return (x, y, positive)


def parse_point(text: str, frame_size: tuple[int, int] | None = None) -> Point:
    """Parse ``"x,y"`` (an object pixel), ``"x,y,+"`` or ``"x,y,-"`` (a background pixel; also 1/0)."""
    m = _POINT_RE.match(str(text))
    if m is None:
        raise InputError(f"point {text!r} is not 'x,y' or 'x,y,+' / 'x,y,-' (integers separated by commas)")
    sign = m.group(3)
    return check_point((int(m.group(1)), int(m.group(2)), sign not in ("-", "0", "neg")), frame_size)


def _seed_radius(shape: tuple[int, int]) -> int:
    return max(2, round(0.015 * min(shape)))


def points_to_mask(image_rgb: np.ndarray, points: list[Point], box: Box | None = None, iterations: int = 5) -> np.ndarray:
    """H×W uint8 {0, 1} mask of one object from clicks (GrabCut seeded with the clicks, inside ``box`` if given).

    Positive clicks are sure object (a small disc), negative ones sure background; with no box, the object is
    looked for within a neighbourhood of the positive clicks. Without a positive click the mask is empty.
    """
    height, width = image_rgb.shape[:2]
    pts = [check_point(p, (height, width)) for p in points]
    pos = [(x, y) for x, y, s in pts if s]
    if not pos and box is None:
        raise InputError("points need at least one positive click (x,y or x,y,+) to define an object")
    if box is not None:
        x, y, w, h = check_box(box, (height, width))
    else:  # the object is assumed within a window around the clicks (half the frame's short side across)
        xs, ys = [p[0] for p in pos], [p[1] for p in pos]
        pad = max(8, min(height, width) // 4)
        x0, y0 = max(0, min(xs) - pad), max(0, min(ys) - pad)
        x, y = x0, y0
        w, h = min(width, max(xs) + pad + 1) - x0, min(height, max(ys) + pad + 1) - y0
    scale = min(1.0, MAX_GRABCUT_SIDE / max(height, width))
    img: np.ndarray = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = img.shape[:2]
    gc = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    bx0, by0 = int(x * sw / width), int(y * sh / height)
    bx1, by1 = max(bx0 + 1, int(np.ceil((x + w) * sw / width))), max(by0 + 1, int(np.ceil((y + h) * sh / height)))
    gc[by0:by1, bx0:bx1] = cv2.GC_PR_FGD
    r = _seed_radius((sh, sw))
    for px, py, positive in pts:
        cv2.circle(gc, (int(px * sw / width), int(py * sh / height)), r, int(cv2.GC_FGD if positive else cv2.GC_BGD), -1)
    fallback = np.zeros((height, width), np.uint8)
    for px, py, positive in pts:
        if positive:
            cv2.circle(fallback, (px, py), max(1, int(r / scale)), 1, -1)
    if box is not None and not pos:
        fallback[y : y + h, x : x + w] = 1
    if (gc == cv2.GC_BGD).all() or not ((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)).any():
        return fallback
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(img, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]  # stub: rect=None is valid with GC_INIT_WITH_MASK
    except cv2.error:  # degenerate colour models: the clicked discs (or the box) themselves
        return fallback
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    if scale < 1.0:
        fg = (cv2.resize(fg.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.uint8)
    return fg if fg.any() else fallback


def prompts_to_mask(image_rgb: np.ndarray, boxes: list[Box] = (), points: list[Point] = ()) -> np.ndarray:  # type: ignore[assignment]
    """The first frame's id mask from prompts: each box is one object (ids 1, 2, ... in order), refined by the
    clicks inside it; clicks outside every box make one more object. Later objects are drawn over earlier ones."""
    if not (isinstance(image_rgb, np.ndarray) and image_rgb.ndim == 3 and image_rgb.shape[2] == 3):
        got = getattr(image_rgb, "shape", type(image_rgb).__name__)
        raise InputError(f"prompts need an HxWx3 image, got {got}")
    if not boxes and not points:
        raise InputError("no prompt: give at least one box or one positive point")
    height, width = image_rgb.shape[:2]
    bxs = [check_box(b, (height, width)) for b in boxes]
    pts = [check_point(p, (height, width)) for p in points]
    if len(bxs) > MAX_OBJECTS:
        raise InputError(f"at most {MAX_OBJECTS} objects, got {len(bxs)} boxes")

    def inside(p: Point, b: Box) -> bool:
        return b[0] <= p[0] < b[0] + b[2] and b[1] <= p[1] < b[1] + b[3]

    ids = np.zeros((height, width), np.uint8)
    for k, b in enumerate(bxs, start=1):
        own = [p for p in pts if inside(p, b)]
        m = points_to_mask(image_rgb, own, box=b) if own else box_to_mask(image_rgb, b)
        ids[m.astype(bool)] = k
    rest = [p for p in pts if not any(inside(p, b) for b in bxs)]
    if rest:
        ids[points_to_mask(image_rgb, rest).astype(bool)] = len(bxs) + 1
    return ids


# -- the prompts rtvos.track and MultiTracker take: a mask, boxes or points, as values or text --------------------
def _shown(v: Any) -> str:
    return repr(tuple(v.tolist() if isinstance(v, np.ndarray) else v))


def _as_list(given: Any, what: str, *lengths: int) -> list[Any]:
    """``given`` as a list of boxes/points; one box (x1, y1, x2, y2) or one point (x, y) alone, or one typed
    as text ("x1,y1,x2,y2", "x,y,-"), is accepted as a list of one, as ultralytics/supervision users pass it."""
    if given is None:
        return []
    if isinstance(given, np.ndarray):
        given = given.tolist()
    if isinstance(given, str):
        return [given]
    if isinstance(given, bytes) or not isinstance(given, Iterable):
        raise InputError(f"{what} must be a list of {what[:-1]}s, got {given!r}")
    items = list(given)
    if items and len(items) in lengths and all(isinstance(v, (int, float, np.number)) for v in items):
        return [items]  # a single one
    return items


def _coords(v: Any, what: str, form: str, *lengths: int) -> tuple[int, ...]:
    """Integer pixel coordinates of one box or point; floats (a detector's output) are rounded, NaN/inf and
    non-numbers are refused naming the value as given."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
        raise InputError(f"{what} must be {form}, got {v!r}")
    vals = list(v)
    if len(vals) not in lengths or not all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
                                           or (what == "point" and i == 2 and isinstance(x, bool))
                                           for i, x in enumerate(vals)):
        raise InputError(f"{what} must be {form} (numbers), got {_shown(vals)}")
    if not all(np.isfinite(float(x)) for x in vals):
        raise InputError(f"{what} {_shown(vals)} has a coordinate that is not a finite number")
    return tuple(int(round(float(x))) for x in vals)


def check_prompts(boxes: Any, points: Any, box_format: str,
             frame_size: tuple[int, int] | None = None) -> tuple[list[Box], list[Point]]:
    """Boxes (in ``box_format``; text as typed on the command line, or numbers) and points, checked, as the
    (x, y, w, h) boxes and (x, y, positive) points GrabCut takes; ``frame_size`` (H, W) checks the bounds."""
    fmt = check_box_format(box_format)
    form = "(x1, y1, x2, y2)" if fmt == "xyxy" else "(x, y, w, h)"
    out_boxes: list[Box] = []
    for b in _as_list(boxes, "boxes", 4):
        if isinstance(b, str):
            out_boxes.append(parse_box(b, frame_size, fmt=fmt))
        else:
            out_boxes.append(box_from(_coords(b, "box", form, 4), fmt, frame_size, shown=_shown(b)))
    pts: list[Point] = []
    for p in _as_list(points, "points", 2, 3):
        if isinstance(p, str):
            pts.append(parse_point(p, frame_size))
            continue
        c = _coords(p, "point", "(x, y) or (x, y, positive)", 2, 3)
        pts.append(check_point(c if len(c) == 2 else (c[0], c[1], bool(c[2])), frame_size))
    objects = len(out_boxes) + any(not any(x <= px < x + w and y <= py < y + h for x, y, w, h in out_boxes)
                                   for px, py, _ in pts)
    if objects > MAX_OBJECTS:
        raise InputError(f"{len(out_boxes)} boxes make {objects} objects; at most {MAX_OBJECTS} can be tracked "
                         "(ids 1..254 in a palette PNG)")
    return out_boxes, pts


def first_mask(mask: MaskLike | None, boxes: Any, points: Any, *,
                box_format: str = BOX_FORMAT) -> tuple[np.ndarray | Callable[[Frame], np.ndarray], np.ndarray]:
    """The pipeline's first mask (an array or a function of the first frame) and the palette."""
    first, palette = given_mask(mask, boxes, points, box_format=box_format, optional=False)
    assert first is not None
    return first, palette


def given_mask(mask: MaskLike | None, boxes: Any, points: Any, *, box_format: str, optional: bool,
                sized_first: bool = False,
                names: dict[str, str] | None = None) -> tuple[np.ndarray | Callable[[Frame], np.ndarray] | None, np.ndarray]:
    """The pipeline's first mask (an array or a function of the first frame) and the palette; None when no
    prompt was given and ``optional`` (the live view will ask for a box)."""
    box_list, pts = check_prompts(boxes, points, box_format)
    if mask is not None and (box_list or pts):
        raise InputError(f"give either {(names or {}).get('either', 'mask= or boxes=/points=')}, not both")
    if mask is None and not box_list and not pts:
        if optional:
            return None, DAVIS_PALETTE.copy()
        raise InputError("a first-frame prompt is needed: " + (names or {}).get(
            "prompt", "mask=, boxes=[(x1, y1, x2, y2), ...] or points=[(x, y), ...] (or serve= to draw a box)"))
    if isinstance(mask, (str, os.PathLike)):
        ids, palette = read_mask(mask)
        if not ids.any() and not sized_first:  # sized_first: the caller checks the size, then this
            raise InputError(f"first mask {mask} has no object: every pixel is 0 (background)")
        return ids, palette
    if mask is not None:
        if not callable(mask):
            arr = np.asarray(mask)
            if arr.ndim != 2:
                raise InputError(f"mask must be an HxW array of object ids, got shape {arr.shape}")
            if arr.dtype == bool:
                arr = arr.astype(np.uint8)
            if not arr.any():
                raise InputError("first mask has no object: every pixel is 0 (background)")
            return arr, DAVIS_PALETTE.copy()
        return mask, DAVIS_PALETTE.copy()

    def from_prompts(frame: Frame) -> np.ndarray:
        return prompts_to_mask(frame.image, box_list, pts)

    return from_prompts, DAVIS_PALETTE.copy()
