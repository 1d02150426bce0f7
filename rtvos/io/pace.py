"""Replaying a file at its own frame rate: what a person watching the live view or a window expects.

A file decodes far faster than real time, so a 10 s clip shown in the browser would flash by in a second. `PacedSource`
hands frame ``k`` out no earlier than ``k / fps`` after the first (the frame's timestamp when the container has
one), and stamps it as captured then, so latency counts from when the frame was due, as for a camera. Live
sources already arrive in real time and pass through untouched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from .base import Frame, FrameSource, FrameSourceBase

__all__ = ["PacedSource", "paced"]


class PacedSource(FrameSourceBase):
    """``source``'s frames no faster than its frame rate; `close` wakes a waiting reader at once. The first
    ``unpaced`` frames pass at decode speed and the clock starts at the next one (a stream resumed at frame k
    catches up to it first, then plays on in real time)."""

    def __init__(self, source: FrameSource, *, unpaced: int = 0) -> None:
        if unpaced < 0:
            raise ValueError(f"unpaced must be >= 0, got {unpaced}")
        self.source = source
        self.unpaced = unpaced
        self._closed = threading.Event()

    # The wrapped source's metadata, read through (a stream learns its size on the first frame).
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.source.name

    @property
    def fps(self) -> float:  # type: ignore[override]
        return self.source.fps

    @property
    def size(self) -> tuple[int, int]:  # type: ignore[override]
        return self.source.size

    @property
    def num_frames(self) -> int | None:  # type: ignore[override]
        return self.source.num_frames

    @property
    def is_live(self) -> bool:  # type: ignore[override]
        return bool(self.source.is_live)

    def __iter__(self) -> Iterator[Frame]:
        period = 1.0 / float(self.source.fps or 25.0)
        start: float | None = None
        first_pts: float | None = None
        for k, frame in enumerate(self.source):
            if k < self.unpaced:
                self._frames_out += 1
                yield frame
                continue
            now = time.perf_counter()
            if start is None:
                start, first_pts = now, frame.pts_s
            if frame.pts_s is not None and first_pts is not None:
                due = start + max(0.0, frame.pts_s - first_pts)
            else:
                due = start + (k - self.unpaced) * period
            if due > now and self._closed.wait(due - now):
                return
            self._frames_out += 1
            yield replace(frame, captured_s=time.time())

    def stats(self) -> dict[str, Any]:
        return self.source.stats()

    def close(self) -> None:
        self._closed.set()
        self.source.close()


def paced(source: FrameSource) -> FrameSource:
    """``source`` paced to real time when it is a file; a live source as it is."""
    return source if source.is_live or isinstance(source, PacedSource) else PacedSource(source)
