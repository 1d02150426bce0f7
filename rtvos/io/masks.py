"""Object-id masks in the DAVIS format (palette PNGs).

Internally a mask is an H×W uint8 array of object ids (0 = background)
plus a 256×3 uint8 palette used only for display/writing. Users hand us
masks in many forms (palette PNGs, 0/255 grayscale, RGB drawings), so
:func:`read_mask` normalises them all to ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import InputError

__all__ = ["DAVIS_PALETTE", "davis_palette", "read_mask", "write_mask"]


def davis_palette(n: int = 256) -> np.ndarray:
    """PASCAL VOC / DAVIS colormap: bits of the index interleaved into R, G, B."""
    idx = np.arange(n, dtype=np.int64)
    pal = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):  # 8 bit-planes, not a per-pixel loop
        for ch in range(3):
            bit = (idx >> (ch + 3 * shift)) & 1
            pal[:, ch] |= bit << (7 - shift)
    return pal.astype(np.uint8)


#: Standard DAVIS palette, 256×3 uint8, read-only (copy before editing).
DAVIS_PALETTE: np.ndarray = davis_palette()
DAVIS_PALETTE.setflags(write=False)

_DAVIS_CODES: np.ndarray = (
    DAVIS_PALETTE[:, 0].astype(np.int64) << 16
    | DAVIS_PALETTE[:, 1].astype(np.int64) << 8
    | DAVIS_PALETTE[:, 2].astype(np.int64)
)


def _full_palette(raw: list[int] | None) -> np.ndarray:
    # PIL may return fewer than 256 entries; unused ids fall back to DAVIS colours.
    pal = DAVIS_PALETTE.copy()
    if raw:
        entries = np.asarray(raw, dtype=np.uint8)[: 256 * 3]
        entries = entries[: len(entries) - len(entries) % 3].reshape(-1, 3)
        pal[: len(entries)] = entries
    return pal


def _ids_from_gray(values: np.ndarray, path: Path) -> np.ndarray:
    """Map each distinct non-zero level to 1..K in ascending order (255 -> 1)."""
    levels, inverse = np.unique(values, return_inverse=True)
    nonzero = levels[levels != 0]
    if len(nonzero) > 255:
        raise InputError(
            f"mask {path} has {len(nonzero)} distinct non-zero values; at most 255 objects are "
            "supported (lossy JPEG masks are not usable)"
        )
    lut = np.zeros(len(levels), dtype=np.uint8)
    lut[levels != 0] = np.arange(1, len(nonzero) + 1, dtype=np.uint8)
    return lut[inverse.reshape(values.shape)]


def _ids_from_rgb(rgb: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Map colours to ids: DAVIS colours keep their index, others get 1..K."""
    codes = (
        rgb[..., 0].astype(np.int32) << 16 | rgb[..., 1].astype(np.int32) << 8 | rgb[..., 2].astype(np.int32)
    )
    colours, inverse = np.unique(codes, return_inverse=True)
    nonblack = colours[colours != 0]
    if len(nonblack) > 255:
        raise InputError(
            f"mask {path} has {len(nonblack)} distinct colours; at most 255 objects are supported "
            "(lossy JPEG or anti-aliased masks are not usable)"
        )
    pal = DAVIS_PALETTE.copy()
    lut = np.zeros(len(colours), dtype=np.uint8)
    in_davis = np.isin(nonblack, _DAVIS_CODES)
    if in_davis.all():
        # Codes are unique in the DAVIS palette, so searchsorted on a sorted copy is exact.
        order = np.argsort(_DAVIS_CODES)
        pos = np.searchsorted(_DAVIS_CODES, nonblack, sorter=order)
        lut[colours != 0] = order[pos].astype(np.uint8)
    else:
        ids = np.arange(1, len(nonblack) + 1)
        lut[colours != 0] = ids.astype(np.uint8)
        pal[ids, 0] = (nonblack >> 16) & 255
        pal[ids, 1] = (nonblack >> 8) & 255
        pal[ids, 2] = nonblack & 255
    return lut[inverse.reshape(codes.shape)], pal


def read_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a mask as (H×W uint8 object ids, 256×3 uint8 palette).

    'P' PNGs keep indices and palette; grayscale maps distinct non-zero
    levels to 1..K ascending (DAVIS-2016 0/255 -> {0, 1}); RGB maps black
    to 0 and other colours to their DAVIS index if all are DAVIS colours,
    else to 1..K in colour order, with a palette reproducing the colours.
    Alpha is ignored.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such mask file: {p}")
    if p.is_dir():
        raise InputError(f"mask path is a folder, expected an image file: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "PA"):
                ids = np.array(im.getchannel(0) if mode == "PA" else im, dtype=np.uint8)
                return ids, _full_palette(im.getpalette())
            if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                gray = np.asarray(im.getchannel(0) if mode == "LA" else im)
                if gray.dtype == bool:
                    gray = gray.astype(np.uint8)
                return _ids_from_gray(gray, p), DAVIS_PALETTE.copy()
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"cannot read mask image (not an image or corrupt): {p}") from None
    ids, pal = _ids_from_rgb(rgb, p)
    return ids, pal


def write_mask(
    path: str | os.PathLike[str], ids: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write ids as a palette PNG (DAVIS format); parent folders are created."""
    arr = np.asarray(ids)
    if arr.ndim != 2:
        raise ValueError(f"mask ids must be a 2-D array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "biu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ValueError(f"mask ids must be integers in 0..255, got dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    pal = DAVIS_PALETTE if palette is None else np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256:
        raise ValueError(f"palette must be N×3 with N <= 256, got shape {pal.shape}")
    full = DAVIS_PALETTE.copy()
    full[: pal.shape[0]] = pal.astype(np.uint8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = arr.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(arr).tobytes())
    img.putpalette(full.reshape(-1).tolist())
    # Written under a temporary name and renamed: a kill or a full disk never leaves a partial PNG under the
    # final name (the rename is atomic on POSIX).
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_mask_size(mask: np.ndarray, frame_hw: tuple[int, ...], mask_name: str = "first mask",
                    frames_name: str = "the source") -> None:
    """The one check that a first mask fits the frames: raises InputError naming both sizes (width x height)."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    if mask.shape != (h, w):
        got = f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim == 2 else f"shape {mask.shape}"
        raise InputError(f"{mask_name} is {got} but the frames of {frames_name} are {w}x{h}")
