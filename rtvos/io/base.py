"""Types shared by every frame source: :class:`InputError`, :class:`Frame` and the :class:`FrameSource` protocol.

Every bad-input problem surfaces as :class:`InputError` with a one-line
message naming the offending path/value, so the CLI can print ``str(err)``
and exit non-zero instead of dumping a traceback from FFmpeg or PIL.

The source API is deliberately small (iterate :class:`Frame` objects, read
``name``/``fps``/``size``/``is_live``/``num_frames``, ``stats()``,
``close()``) so that files (:mod:`rtvos.io.video`) and live sources
(:mod:`rtvos.io.live`) sit behind :func:`rtvos.io.open_source` without
touching callers. This module imports nothing else from :mod:`rtvos`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "IMAGE_EXTENSIONS",
    "Frame",
    "FrameSource",
    "FrameSourceBase",
    "InputError",
    "check_fps",
    "natural_key",
]

#: Extensions (lower case) recognised as frames when a folder is opened.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

#: Frame rate reported for image folders (and streams that state none) when the caller gives none.
DEFAULT_FOLDER_FPS: float = 24.0


class InputError(ValueError):
    """A user-supplied input (path, file contents, shape, value) is unusable.

    Subclasses ValueError so generic callers still catch it; the message is
    always a single line so it can be shown to users verbatim.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Frame:
    """One decoded frame; ``image`` is H×W×3 uint8 RGB, C-contiguous.

    ``captured_s`` is the wall clock (``time.time()``) when the frame was
    decoded, so latency can be compared with a sender's own clock.
    """

    source_index: int  # position in the source (live sources skip the frames they drop)
    image: np.ndarray
    pts_s: float | None = None
    captured_s: float | None = None


@runtime_checkable
class FrameSource(Protocol):
    """What the pipeline reads from a source: an iterable of :class:`Frame` with stream metadata.

    ``size`` is (H, W), (0, 0) while unknown; ``num_frames`` is None when
    the container does not say (and always for live sources); ``is_live``
    sources produce frames in real time whether or not they are consumed.
    ``stats()`` holds at least ``"dropped"`` and ``"reconnects"`` (zeros for
    files); live sources add more counters.

    Classes may satisfy the protocol structurally (``isinstance`` works, it
    is runtime-checkable) or inherit it, and then get the defaults below:
    not live, zero stats, a no-op ``close()`` and context-manager support.
    :class:`FrameSourceBase` adds a frame counter and a ``repr``.
    """

    name: str
    fps: float
    size: tuple[int, int]
    num_frames: int | None
    is_live: bool = False

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Counters so far; files never drop frames or reconnect."""
        return {"frames": 0, "dropped": 0, "reconnects": 0}

    def close(self) -> None:
        """Release decoder resources; safe to call more than once."""
        return None  # explicit: a body-less Protocol method would be implicitly abstract to mypy

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FrameSourceBase(FrameSource):
    """Concrete base of the package's sources: the :class:`FrameSource` defaults plus a count of frames handed out."""

    _frames_out: int = 0

    def stats(self) -> dict[str, Any]:
        """Counters so far; files never drop frames or reconnect."""
        return {"frames": self._frames_out, "dropped": 0, "reconnects": 0}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, size={self.size}, "
            f"fps={self.fps:g}, num_frames={self.num_frames})"
        )


def natural_key(name: str) -> list[Any]:
    """Sort key for file names: "frame2" before "frame10"; zero-padded names (DAVIS) sort as plain text."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def check_fps(fps: float, what: str) -> float:
    """``fps`` as a finite float > 0, else :class:`InputError` naming ``what`` (a path or stream)."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"invalid frame rate for {what}: {fps!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"invalid frame rate for {what}: {fps!r} (must be > 0)")
    return value
