"""The pipeline's reader: hands the model one frame at a time, with its decode (or wait) time and capture stamp.

A file is read ahead on a thread into a bounded queue, so decoding overlaps the model. A live source is read on
the model's own thread, straight from the source: a `LiveSource` already decodes on its thread and keeps only
the newest frame (policy "drop") or every frame (policy "block"), so that policy is the one place where frames
are dropped and counted, and a frame is never queued twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from .io.base import Frame, FrameSource
from .stats import Timer

__all__ = ["Decoded", "End", "Reader", "put_while"]

T = TypeVar("T")

log = logging.getLogger("rtvos")


def put_while(q: queue.Queue[T], item: T, go_on: Callable[[], bool], poll_s: float) -> bool:
    """Put ``item`` into the bounded queue ``q``, waiting for room in steps of ``poll_s`` while ``go_on()`` holds
    (a stop, an error), so no thread blocks for good on a consumer that has gone; True once it is in."""
    while go_on():
        try:
            q.put(item, timeout=poll_s)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class Decoded:
    frame: Frame
    captured_s: float  # the source's capture stamp, else the wall time the frame was read
    decode_ms: float  # files: the decode; live sources: the wait for the frame to arrive
    dropped: int  # the source's drops this run, when this frame was read


@dataclass
class End:
    error: BaseException | None = None
    interrupted: bool = False  # Ctrl-C landed on the reader thread


class Reader:
    """Frames of ``source`` for the loop, ahead on a thread (files, ``threaded``) or on the caller's thread.

    The reader owns the source from :meth:`start` on and closes it in :meth:`close`. ``max_frames`` bounds
    the read-ahead so a file is not decoded past what the loop will take.
    """

    def __init__(self, source: FrameSource, *, max_frames: int | None = None, queue_size: int = 4,
                 threaded: bool = True, poll_s: float = 0.1) -> None:
        self.source = source
        self.is_live = bool(source.is_live)
        self.ahead = threaded and not self.is_live
        self.max_frames = max_frames
        self.poll_s = poll_s
        self.queue: queue.Queue[Decoded | End] = queue.Queue(maxsize=queue_size)
        self.peak = 0  # the most frames ever waiting in the read-ahead queue
        self.reconnects = 0
        self._base = {"dropped": 0, "reconnects": 0}
        self._last = dict(self._base)
        self._stop = threading.Event()
        self._it: Iterator[Frame] | None = None
        self._clock = Timer()  # decoding runs on the host: no device sync
        self._thread = threading.Thread(target=self._read_loop, name="rtvos-reader", daemon=True)
        self._closed = False

    def start(self) -> None:
        """Count the source's drops and reconnects from now (a live source decodes from the moment it is opened:
        what it dropped while the model loaded is not this run's), and start reading ahead (files)."""
        self._base = self._raw_stats(None) or self._base
        if self.ahead:
            self._thread.start()

    def next(self, idle: Callable[[], None]) -> Decoded | End:
        """The next frame, or End; ``idle`` runs every ``poll_s`` while a file's frame is not ready (it checks
        the writer and updates the progress line, and may raise to stop the wait)."""
        if not self.ahead:
            if self._stop.is_set():
                return End()
            if self._it is None:
                self._it = iter(self.source)
            item = self._decode(self._it)
            return End() if item is None else item
        while True:
            idle()
            try:
                return self.queue.get(timeout=self.poll_s)
            except queue.Empty:
                continue

    def stats(self) -> dict[str, int]:
        """The source's drops and reconnects during this run (the last known ones once it is closed)."""
        raw = self._raw_stats(None)
        if raw is not None:
            self._last = {k: raw[k] - self._base[k] for k in raw}
        return self._last

    def wake(self) -> None:
        """Stop reading (thread-safe). A live source's iterator only waits for frames and closing it is what
        wakes that wait, so a live source is closed here; a file is left to finish its current frame."""
        self._stop.set()
        if self.is_live:
            self._close_source()

    def close(self) -> None:
        """Stop the read-ahead thread, close the iterator and the source (each once)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()  # next() returns within one frame's decode; closing under it is unsafe
        elif self._it is not None:
            self._close_iterator(self._it)
        self._close_source()

    # -- internals ---------------------------------------------------------------------------------------------
    def _raw_stats(self, default: dict[str, int] | None) -> dict[str, int] | None:
        try:
            s = self.source.stats()
        except Exception:  # a closed source may refuse
            return default
        return {k: int(s.get(k, 0)) for k in ("dropped", "reconnects")}

    def _decode(self, it: Iterator[Frame]) -> Decoded | None:
        self._clock.start()
        try:
            frame = next(it)
        except StopIteration:
            return None
        decode_ms = self._clock.lap("decode")
        st = self.stats()
        self.reconnects = st["reconnects"]
        captured = frame.captured_s
        return Decoded(frame, time.time() if captured is None else float(captured), decode_ms, st["dropped"])

    def _read_loop(self) -> None:
        end = End()
        it: Iterator[Frame] | None = None
        try:
            it = iter(self.source)
            read = 0
            while not self._stop.is_set() and (self.max_frames is None or read < self.max_frames):
                item = self._decode(it)
                if item is None:
                    break
                self._offer(item)
                read += 1
        except KeyboardInterrupt:
            end = End(interrupted=True)
        except BaseException as err:  # handed to the loop, which re-raises it after the flush
            end = End(error=err)
        finally:
            if it is not None:
                self._close_iterator(it)
            self._offer(end)

    def _offer(self, item: Decoded | End) -> None:
        if put_while(self.queue, item, lambda: not self._stop.is_set(), self.poll_s):
            self.peak = max(self.peak, self.queue.qsize())

    @staticmethod
    def _close_iterator(it: Iterator[Frame]) -> None:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception as err:
                log.debug("closing the source iterator: %s", err)

    def _close_source(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.source.close()
        except Exception as err:
            log.warning("rtvos: closing %s: %s", self.source.name, err)
