"""Colour overlay of object-id masks on frames, for preview and output video.

Runs once per output frame in the real-time loop, so every object is drawn
in one vectorised pass (palette lookup + a single blend) with no per-object
Python loop; cost is independent of the number of objects.
"""

from __future__ import annotations

import cv2
import numpy as np

from .masks import DAVIS_PALETTE

__all__ = ["object_boundaries", "overlay"]


def object_boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels of an object (id > 0) with a 4-neighbour of a different id.

    The image border is not a boundary, so an object touching the edge is
    not outlined along it. Two touching objects are both outlined. Uses
    max != min over the 4-neighbourhood (cv2 morphology, ~0.1 ms at 480p).
    """
    ids8 = np.ascontiguousarray(ids, dtype=np.uint8)
    edge = cv2.dilate(ids8, _CROSS) != cv2.erode(ids8, _CROSS)
    edge &= ids8 != 0
    return edge


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _palette256(palette: np.ndarray) -> np.ndarray:
    pal = np.asarray(palette)
    if pal.shape == (256, 3) and pal.dtype == np.uint8:
        return np.ascontiguousarray(pal)
    if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256:
        raise ValueError(f"palette must be N×3 with N <= 256, got shape {pal.shape}")
    full = DAVIS_PALETTE.copy()  # ids beyond a short palette get DAVIS colours
    full[: pal.shape[0]] = pal.astype(np.uint8)
    return full


def overlay(
    frame_rgb: np.ndarray,
    ids: np.ndarray,
    palette: np.ndarray = DAVIS_PALETTE,
    alpha: float = 0.5,
    contour: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend palette colours over object pixels and outline each object.

    Object pixels become ``round((1 - alpha) * frame + alpha * palette[id])``
    (background untouched); with ``contour`` the 1-px object boundary is
    painted in the pure palette colour. ``out`` (H×W×3 uint8, may be
    ``frame_rgb`` itself) avoids an allocation per frame.
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"frame must be HxWx3 uint8, got {frame_rgb.shape} {frame_rgb.dtype}")
    if ids.shape != frame_rgb.shape[:2]:
        raise ValueError(f"mask shape {ids.shape} does not match frame shape {frame_rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ids = np.ascontiguousarray(ids, dtype=np.uint8)
    if out is None:
        out = frame_rgb.copy()
    else:
        if out.shape != frame_rgb.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous {frame_rgb.shape} uint8 array, got {out.shape} {out.dtype}"
            )
        if out is not frame_rgb:
            np.copyto(out, frame_rgb)
    fg = ids != 0
    if not fg.any():
        return out
    # One LUT pass colours all objects (cv2.LUT is ~10x faster than palette[ids]).
    lut = _palette256(palette).reshape(256, 1, 3)
    colours = cv2.LUT(cv2.cvtColor(ids, cv2.COLOR_GRAY2RGB), lut)
    # addWeighted is SIMD uint8 with rounding + saturation: exact and fast.
    blended = cv2.addWeighted(np.ascontiguousarray(frame_rgb), 1.0 - alpha, colours, alpha, 0.0)
    if contour:
        # Boundary pixels take the pure colour: fold them into the blend source.
        cv2.copyTo(colours, object_boundaries(ids).view(np.uint8), blended)
    # cv2.copyTo with a mask writes in place (np.copyto(where=) is ~100x slower).
    cv2.copyTo(blended, fg.view(np.uint8), out)
    return out
