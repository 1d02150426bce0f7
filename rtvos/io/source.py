"""Opening a source by name: :func:`open_source` picks a file, folder, webcam or network source."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import ArraySource
from .base import FrameSource, InputError
from .live import LIVE_SCHEMES, NetworkSource, WebcamSource, is_webcam, redact_url
from .video import ImageFolderSource, VideoFileSource

__all__ = ["SourceLike", "as_source", "open_source"]

SourceLike = str | os.PathLike[str] | int | FrameSource | np.ndarray | Iterable[np.ndarray]


def _is_url(source: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) is not None


def open_source(
    source: str | int | os.PathLike[str],
    *,
    fps: float | None = None,
    transport: str = "tcp",
    policy: str = "drop",
    queue_size: int = 1,
    reconnect: bool = True,
    open_timeout_s: float = 10.0,
    max_reconnect_s: float | None = None,
    read_timeout_s: float = 5.0,
) -> FrameSource:
    """Open a video file, a folder of frames, a webcam or a network stream.

    - int, digit string or ``/dev/videoN``: webcam (:class:`rtvos.io.live.WebcamSource`);
    - ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``: network stream
      (:class:`rtvos.io.live.NetworkSource`, RTSP over ``transport`` tcp|udp);
    - anything else: a file or folder on disk.

    ``fps`` sets the rate of an image folder (default 24), overrides the rate
    reported for a video file or stream (timestamps still come from the
    source), and is requested from a webcam. The remaining options apply to
    live sources only: ``policy`` "drop" keeps the newest ``queue_size``
    frames, "block" stalls the reader instead; ``reconnect`` retries with
    exponential backoff (0.25 s doubling to 4 s) until ``max_reconnect_s``
    (None = forever); ``open_timeout_s``/``read_timeout_s`` bound a
    connection attempt and a silent server.
    """
    live = {
        "fps": fps, "policy": policy, "queue_size": queue_size, "reconnect": reconnect,
        "open_timeout_s": open_timeout_s, "read_timeout_s": read_timeout_s, "max_reconnect_s": max_reconnect_s,
    }
    if is_webcam(source):
        return WebcamSource(os.fsdecode(source) if isinstance(source, bytes) else source, **live)  # type: ignore[arg-type]
    if isinstance(source, int):
        raise InputError(f"invalid webcam index: {source!r} (must be an integer >= 0)")
    text = os.fspath(source)  # type: ignore[arg-type]
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if _is_url(text):
        scheme = text.split(":", 1)[0].lower()
        if scheme not in LIVE_SCHEMES:
            raise InputError(
                f"unsupported URL scheme {scheme!r} in {redact_url(text)} "
                f"(expected one of: {', '.join(LIVE_SCHEMES)})"
            )
        return NetworkSource(text, transport=transport, **live)
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"no such file or folder: {text}")
    if path.is_dir():
        return ImageFolderSource(path, fps=fps)
    return VideoFileSource(path, fps=fps)


def as_source(source: SourceLike, *, bgr: bool = False, fps: float | None = None, policy: str | None = None,
              transport: str | None = None) -> FrameSource:
    """Anything `rtvos.track` takes as a source, opened: a FrameSource as it is, a path/URL/webcam index through
    :func:`open_source`, frames (an array or an iterable of arrays) as an :class:`ArraySource`."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike, int)) and not isinstance(source, bool):
        kwargs: dict[str, Any] = {k: v for k, v in (("transport", transport), ("policy", policy)) if v is not None}
        return open_source(source, **kwargs)
    if isinstance(source, (np.ndarray, Iterable)):
        return ArraySource(source, fps=fps or 25.0, bgr=bgr)
    raise InputError(f"source must be a path, URL, webcam index, FrameSource or frames, got {type(source).__name__}")
