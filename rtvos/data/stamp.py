"""Wall-clock time stamps painted into frames as a visible barcode.

Glass-to-glass latency needs the sender's clock inside the picture itself:
container timestamps are rewritten by encoders, RTP and reconnects, pixels
are not. The stamp is 64 big black/white blocks (2 rows of 32) across the
top of the frame: 48 bits of milliseconds since the Unix epoch plus a
16-bit CRC, so a frame without a stamp (or a mangled one) decodes to None.

The bit layout is pure Python because the test RTSP server
(``tests/support/rtsp_server.py``) loads this file under Debian's
``/usr/bin/python3``, which has GStreamer but no numpy; numpy is only
imported inside the array functions.
"""

from __future__ import annotations

import binascii
from typing import Any

__all__ = ["STAMP_COLUMNS", "STAMP_ROWS", "decode_stamp", "encode_stamp", "stamp_bits", "stamp_layout"]

STAMP_COLUMNS = 32
STAMP_ROWS = 2
_TIME_BITS = 48


def stamp_layout(width: int) -> tuple[int, int]:
    """Block (width, height) in pixels for a frame ``width`` pixels wide.

    Depends on the width only, so the decoder needs nothing but the image.
    Blocks are at least 4 px so they survive H.264's 4×4 transform.
    """
    bw = width // STAMP_COLUMNS
    if bw < 4:
        raise ValueError(f"frame width {width} is too small for a time stamp (needs >= {4 * STAMP_COLUMNS})")
    return bw, max(bw, 8)


def stamp_bits(t: float) -> list[int]:
    """The 64 bits (MSB first) that encode wall-clock time ``t`` (seconds)."""
    ms = int(round(t * 1000.0)) & ((1 << _TIME_BITS) - 1)
    crc = binascii.crc_hqx(ms.to_bytes(6, "big"), 0xFFFF)
    word = (ms << 16) | crc
    return [(word >> (63 - i)) & 1 for i in range(STAMP_COLUMNS * STAMP_ROWS)]


def _bits_to_time(bits: list[int]) -> float | None:
    word = 0
    for b in bits:
        word = (word << 1) | int(b)
    ms, crc = word >> 16, word & 0xFFFF
    if binascii.crc_hqx(ms.to_bytes(6, "big"), 0xFFFF) != crc:
        return None
    return ms / 1000.0


def encode_stamp(image_rgb: Any, t: float) -> Any:
    """Paint the stamp for time ``t`` into the top rows of an H×W×3 uint8 image (in place); returns it."""
    import numpy as np

    img = np.asarray(image_rgb)
    h, w = img.shape[:2]
    bw, bh = stamp_layout(w)
    if h < STAMP_ROWS * bh:
        raise ValueError(f"frame height {h} is too small for a time stamp (needs >= {STAMP_ROWS * bh})")
    bits = np.asarray(stamp_bits(t), dtype=np.uint8).reshape(STAMP_ROWS, STAMP_COLUMNS) * 255
    band = np.repeat(np.repeat(bits, bh, axis=0), bw, axis=1)
    img[: STAMP_ROWS * bh, :] = 0
    img[: STAMP_ROWS * bh, : STAMP_COLUMNS * bw] = band[..., None]
    return img


def decode_stamp(image_rgb: Any) -> float | None:
    """The time painted by :func:`encode_stamp` (seconds, ms resolution), or None if there is none.

    Reads the centre half of each block so compression ringing at block
    edges does not flip bits; the CRC rejects frames that carry no stamp.
    """
    import numpy as np

    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] < 3:
        return None
    h, w = img.shape[:2]
    try:
        bw, bh = stamp_layout(w)
    except ValueError:
        return None
    if h < STAMP_ROWS * bh:
        return None
    luma = img[: STAMP_ROWS * bh, : STAMP_COLUMNS * bw, :3].astype(np.float32).mean(axis=2)
    blocks = luma.reshape(STAMP_ROWS, bh, STAMP_COLUMNS, bw)
    y0, y1 = bh // 4, bh - bh // 4
    x0, x1 = bw // 4, bw - bw // 4
    centres = blocks[:, y0:y1, :, x0:x1].mean(axis=(1, 3))
    return _bits_to_time([int(v) for v in (centres > 127.5).ravel()])
