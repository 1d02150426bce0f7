"""Live frame sources: webcams and network streams (RTSP, RTMP, HTTP).

A live source must never make the camera wait for the model: decoding runs
in a reader thread that hands over only the newest frame (policy "drop",
counting what it discards) or applies back-pressure (policy "block", for
recordings where every frame matters). When the stream goes away the
reader reconnects with exponential backoff while the consumer simply sees
no frames; indices and timestamps keep increasing across reconnects.

URLs may carry credentials (``rtsp://user:pass@cam/...``); every message
this module produces goes through :func:`redact_url`/:func:`redact_text`
first, and FFmpeg's own errors are reduced to their reason without the URL.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import av
import cv2
import numpy as np

from .base import DEFAULT_FOLDER_FPS, Frame, FrameSourceBase, InputError, check_fps

__all__ = [
    "LIVE_SCHEMES",
    "LiveSource",
    "NetworkSource",
    "WebcamSource",
    "is_webcam",
    "redact_text",
    "redact_url",
]

log = logging.getLogger("rtvos")

#: URL schemes opened as network streams.
LIVE_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https")

POLICIES = ("drop", "block")
TRANSPORTS = ("tcp", "udp")

#: Reconnect backoff: first wait, cap (seconds); the wait doubles per failed attempt.
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 4.0

#: Consecutive undecodable packets tolerated before the connection is treated as lost.
MAX_DECODE_ERRORS = 50

# Everything between the scheme and the *last* "@" of the URL token is the user info: a password may hold an
# unencoded "/", "?" or "#", so this must not depend on the URL parsing as the RFC says (over-redacting a path
# that holds an "@" is the safe side).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s'\"<>]*@")
_SECRET_KEYS = re.compile(r"(?i)(pass|pwd|token|secret|key|auth|sig)")
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&\s#]*(?:pass|pwd|token|secret|key|auth|sig)[^=&\s#]*=)[^&\s#]*")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` and secret-looking query values by ``***``."""
    text = _USERINFO.sub(r"\1***@", str(url))  # first, and whatever the parser makes of the rest
    try:
        parts = urlsplit(text)
    except ValueError:
        return redact_text(text)
    if not parts.scheme or not parts.netloc:
        return redact_text(text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_KEYS.search(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Redact every URL credential found anywhere in free text (e.g. an FFmpeg message)."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", str(text)))


class _ConnectError(InputError):
    """A failed connection attempt; ``reason`` is the redacted cause without the URL."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reason(err: BaseException, timeout_s: float | None = None) -> str:
    """FFmpeg's reason without the file name (which would be the raw URL)."""
    if isinstance(err, av.error.ExitError) and timeout_s is not None:
        return f"no answer within {timeout_s:g} s"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return redact_text(" ".join(str(text).split()))


def is_webcam(source: Any) -> bool:
    """True for a camera index (int or digit string) or a /dev/videoN path."""
    if isinstance(source, bool):
        return False
    if isinstance(source, int):
        return source >= 0
    text = os.fsdecode(source) if isinstance(source, bytes) else str(source)
    return text.isdigit() or re.fullmatch(r"/dev/video\d+", text) is not None


class _Stream(Protocol):
    """One connection: yields (rgb, pts_s) until the stream ends (returns) or breaks (raises)."""

    fps: float | None
    backend: str

    def frames(self) -> Generator[tuple[np.ndarray, float | None], None, None]: ...

    def close(self) -> None: ...


class _AvStream:
    """A PyAV input (network or v4l2), first video stream, decoded for low delay."""

    def __init__(self, container: Any, backend: str) -> None:
        self.container = container
        self.backend = backend
        if not container.streams.video:
            container.close()
            raise InputError("no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        # Frame threading holds back one frame per thread; slices do not add delay.
        cc.thread_type = "SLICE"
        cc.flags |= av.codec.context.Flags.low_delay
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.stream = stream
        self.decode_errors = 0

    def frames(self) -> Generator[tuple[np.ndarray, float | None], None, None]:
        stream, tb = self.stream, self.stream.time_base
        bad = 0
        for packet in self.container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                # A lost/corrupt packet (UDP loss, reconnect mid-GOP) spoils frames until the next
                # keyframe, not the connection.
                bad += 1
                self.decode_errors += 1
                if bad >= MAX_DECODE_ERRORS:
                    raise
                continue
            bad = 0
            for vf in decoded:
                pts = float(vf.pts * tb) if vf.pts is not None and tb else None
                yield np.ascontiguousarray(vf.to_ndarray(format="rgb24")), pts

    def close(self) -> None:
        self.container.close()


def _quiet_capture(target: int | str) -> cv2.VideoCapture:
    """Open a VideoCapture without OpenCV's own "[ WARN ] cap_v4l ..." or "[ERROR:0@0.1] ... Camera index out of
    range" lines (a probe that fails is expected here): our error says it in one line."""
    utils = getattr(cv2, "utils", None)
    logging_mod = getattr(utils, "logging", None) if utils is not None else None
    if logging_mod is None:
        return cv2.VideoCapture(target)
    previous = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(target)
    finally:
        logging_mod.setLogLevel(previous)


class _CvStream:
    """An OpenCV VideoCapture (the webcam fallback when PyAV has no v4l2 input)."""

    backend = "opencv"

    def __init__(self, cap: Any) -> None:
        self.cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else None

    def frames(self) -> Generator[tuple[np.ndarray, float | None], None, None]:
        while True:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                return  # unplugged / end: the reader decides whether to reconnect
            msec = float(self.cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
            pts = msec / 1000.0 if msec > 0 else None
            if bgr.ndim == 2:
                yield cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB), pts
            else:
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pts

    def close(self) -> None:
        self.cap.release()


class LiveSource(FrameSourceBase):
    """Base of live sources: reader thread, newest-frame hand-over, reconnects.

    Subclasses implement :meth:`_connect` (return a connected :class:`_Stream`
    or raise :class:`InputError` with a redacted reason) and set ``display``
    (the redacted name used in messages). The first connection is made and
    its first frame decoded in the constructor, so a bad URL or device fails
    there with :class:`InputError` and ``size``/``fps`` are known.

    ``pts_s`` starts at 0 and stays increasing across reconnects (each new
    connection continues from the wall-clock time it came back);
    ``captured_s`` is ``time.time()`` when the frame was decoded.
    Iteration ends only after :meth:`close`, when the stream ends with
    ``reconnect=False``, or when reconnecting gave up after
    ``max_reconnect_s`` (then :class:`InputError` is raised).
    """

    is_live = True
    display: str

    def __init__(
        self,
        *,
        fps: float | None = None,
        policy: str = "drop",
        queue_size: int = 1,
        reconnect: bool = True,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        max_reconnect_s: float | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise InputError(f"unknown frame policy {policy!r} for {self.display} (expected one of: drop, block)")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InputError(f"queue_size must be an integer >= 1 for {self.display}, got {queue_size!r}")
        for what, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise InputError(f"{what} must be > 0 for {self.display}, got {value!r}")
        if max_reconnect_s is not None and not (isinstance(max_reconnect_s, (int, float)) and max_reconnect_s >= 0):
            raise InputError(f"max_reconnect_s must be >= 0 or None for {self.display}, got {max_reconnect_s!r}")
        self.requested_fps = None if fps is None else check_fps(fps, self.display)
        self.policy = policy
        self.queue_size = queue_size
        self.reconnect = bool(reconnect)
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.max_reconnect_s = None if max_reconnect_s is None else float(max_reconnect_s)
        self.num_frames = None

        self._cond = threading.Condition()
        self._queue: deque[Frame] = deque()
        self._stop = threading.Event()
        self._finished = False
        self._error: BaseException | None = None
        self._frames_out = 0
        self._decoded = 0
        self._dropped = 0
        self._reconnects = 0
        self._attempts = 0
        self._connected = False
        self._t0: float | None = None
        self._last_pts: float | None = None
        self._conn_base: tuple[float | None, float] | None = None
        self._resize_warned = False
        self._listeners: list[Callable[[], None]] = []

        stream = self._connect()
        frames = stream.frames()
        try:
            first = next(frames)
        except StopIteration:
            stream.close()
            raise InputError(f"stream {self.display} ended before its first frame") from None
        except (av.error.FFmpegError, OSError) as err:
            stream.close()
            raise InputError(f"cannot read from {self.display}: {_reason(err, self.read_timeout_s)}") from None
        image = first[0]
        self.size = (int(image.shape[0]), int(image.shape[1]))
        self.fps = self.requested_fps or stream.fps or DEFAULT_FOLDER_FPS
        self.backend = stream.backend
        self._connected = True
        self._deliver(first)
        self._thread = threading.Thread(
            target=self._run, args=(stream, frames), name=f"rtvos-reader {self.display}", daemon=True
        )
        self._thread.start()

    # ---------------------------------------------------------------- subclass hook
    def _connect(self) -> _Stream:
        raise NotImplementedError

    # ---------------------------------------------------------------- reader thread
    def _run(self, stream: _Stream, frames: Generator[tuple[np.ndarray, float | None], None, None]) -> None:
        try:
            while not self._stop.is_set():
                reason = "stream ended"
                failed = False
                try:
                    for item in frames:
                        if self._stop.is_set():
                            break
                        self._deliver(item)
                except (av.error.FFmpegError, OSError, InputError) as err:
                    reason, failed = _reason(err, self.read_timeout_s), True
                finally:
                    frames.close()
                    stream.close()
                    with self._cond:
                        self._connected = False
                if self._stop.is_set():
                    break
                if not self.reconnect:
                    if failed:
                        self._error = InputError(f"lost stream {self.display}: {reason}")
                    else:
                        log.info("rtvos: %s: %s", self.display, reason)
                    break
                new = self._reconnect(reason)
                if new is None:
                    break
                stream, frames = new, new.frames()
                self._conn_base = None
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, never lost
            self._error = err
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()
            self._notify()

    def _reconnect(self, reason: str) -> _Stream | None:
        start = time.monotonic()
        delay = BACKOFF_START_S
        attempt = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - start
            if self.max_reconnect_s is not None and elapsed >= self.max_reconnect_s:
                self._error = InputError(
                    f"lost stream {self.display}: gave up reconnecting after {elapsed:.1f} s "
                    f"({attempt} attempts; last error: {reason})"
                )
                log.error("rtvos: %s", self._error)
                return None
            attempt += 1
            if self.max_reconnect_s is not None:
                delay = min(delay, max(0.0, self.max_reconnect_s - elapsed))
            if attempt == 1:
                log.warning("rtvos: lost %s (%s); reconnecting in %.2g s", self.display, reason, delay)
            else:
                log.warning(
                    "rtvos: reconnecting to %s: attempt %d in %.2g s (%s)", self.display, attempt, delay, reason
                )
            if self._stop.wait(delay):
                return None
            with self._cond:
                self._attempts += 1
            try:
                stream = self._connect()
            except InputError as err:
                reason = getattr(err, "reason", str(err))
                delay = min(delay * 2 if delay > 0 else BACKOFF_START_S, BACKOFF_MAX_S)
                continue
            with self._cond:
                self._reconnects += 1
                self._connected = True
            log.warning("rtvos: reconnected to %s after %.1f s", self.display, time.monotonic() - start)
            return stream
        return None

    def _deliver(self, item: tuple[np.ndarray, float | None]) -> None:
        image, raw_pts = item
        captured = time.time()
        if image.shape[:2] != self.size:
            # A restarted server may come back at another resolution; downstream state is per-size.
            if not self._resize_warned:
                log.warning(
                    "rtvos: %s now sends %dx%d frames; resizing to %dx%d",
                    self.display, image.shape[1], image.shape[0], self.size[1], self.size[0],
                )
                self._resize_warned = True
            image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        if self._t0 is None:
            self._t0 = captured
        if self._conn_base is None:
            since = captured - self._t0
            if self._last_pts is not None:
                since = max(since, self._last_pts + 1.0 / self.fps)
            self._conn_base = (raw_pts, since)
        base_raw, base_s = self._conn_base
        pts = base_s + (raw_pts - base_raw) if raw_pts is not None and base_raw is not None else captured - self._t0
        self._last_pts = pts
        with self._cond:
            frame = Frame(source_index=self._decoded, image=image, pts_s=pts, captured_s=captured)
            self._decoded += 1
            if self.policy == "block":
                while len(self._queue) >= self.queue_size and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
            elif len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(frame)
            self._cond.notify_all()
        self._notify()

    # ---------------------------------------------------------------- consumer side
    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while not self._queue and not self._finished and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._queue:
                    frame = self._queue.popleft()
                    self._frames_out += 1
                    self._cond.notify_all()
                else:
                    err, self._error = self._error, None
                    if err is not None:
                        raise err
                    return
            yield frame

    def poll(self) -> Frame | None:
        """The waiting frame, or None at once: for a loop that serves many streams and cannot block on one (it
        learns of new frames through :meth:`add_listener`). Once the stream has ended it raises the reader's
        error, then StopIteration. The frame policy is the same as iteration's."""
        with self._cond:
            if self._queue:
                frame = self._queue.popleft()
                self._frames_out += 1
                self._cond.notify_all()
                return frame
            if not (self._finished or self._stop.is_set()):
                return None
            err, self._error = self._error, None
        if err is not None:
            raise err
        raise StopIteration

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the reader thread; it must not block) after each frame arrives and when the
        stream ends."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception as err:  # a listener's bug must not stop the camera
                log.warning("rtvos: %s: frame listener failed: %s", self.display, err)

    def stats(self) -> dict[str, Any]:
        """Counters so far: frames handed out, dropped, decoded, reconnects (successful) and attempts."""
        with self._cond:
            return {
                "frames": self._frames_out,
                "dropped": self._dropped,
                "reconnects": self._reconnects,
                "reconnect_attempts": self._attempts,
                "decoded": self._decoded,
                "queued": len(self._queue),
                "connected": self._connected,
                "backend": self.backend,
            }

    def close(self, timeout: float | None = None) -> None:
        """Stop the reader and wait for it (at most ``timeout``, default read timeout + 1 s)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.read_timeout_s + 1.0 if timeout is None else timeout)
            if thread.is_alive():
                log.warning("rtvos: reader for %s still blocked in a read after close()", self.display)
        with self._cond:
            self._queue.clear()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display}, size={self.size}, fps={self.fps:g}, policy={self.policy})"


class NetworkSource(LiveSource):
    """rtsp/rtsps/rtmp/http(s) through PyAV with low-latency demuxer options.

    ``transport`` picks RTSP over TCP (reliable, default) or UDP (lower
    latency, may lose packets). Socket timeouts make a dead server show up
    as an error within ``read_timeout_s`` instead of a hang.
    """

    def __init__(self, url: str, *, transport: str = "tcp", **kwargs: Any) -> None:
        self.url = str(url)
        self.display = redact_url(self.url)
        self.scheme = urlsplit(self.url).scheme.lower()
        if self.scheme not in LIVE_SCHEMES:
            raise InputError(
                f"unsupported URL scheme {self.scheme!r} in {self.display} "
                f"(expected one of: {', '.join(LIVE_SCHEMES)})"
            )
        if transport not in TRANSPORTS:
            raise InputError(f"unknown transport {transport!r} for {self.display} (expected one of: tcp, udp)")
        self.transport = transport
        path = urlsplit(self.url).path.rstrip("/")
        self.name = path.rsplit("/", 1)[-1] or (urlsplit(self.url).hostname or "stream")
        super().__init__(**kwargs)

    def av_options(self) -> dict[str, str]:
        """Demuxer/protocol options: small probe, no input buffering, socket timeouts."""
        us = str(int(self.read_timeout_s * 1e6))
        opts = {
            "fflags": "nobuffer",
            "flags": "low_delay",
            "probesize": "32768",
            "analyzeduration": "100000",
        }
        if self.scheme in ("rtsp", "rtsps"):
            opts["rtsp_transport"] = self.transport
            opts["timeout"] = us  # socket I/O timeout (µs)
            if self.transport == "udp":
                opts["max_delay"] = "100000"  # reorder wait for late UDP packets (µs)
                opts["buffer_size"] = str(1 << 20)
        else:
            opts["rw_timeout"] = us
        return opts

    def _connect(self) -> _Stream:
        try:
            container = av.open(
                self.url, mode="r", options=self.av_options(),
                timeout=(self.open_timeout_s, self.read_timeout_s),
            )
        except (av.error.FFmpegError, OSError) as err:
            reason = _reason(err, self.open_timeout_s)
            raise _ConnectError(f"cannot open stream {self.display}: {reason}", reason) from None
        try:
            return _AvStream(container, "pyav")
        except InputError as err:
            raise _ConnectError(f"cannot open stream {self.display}: {err}", str(err)) from None


class WebcamSource(LiveSource):
    """A camera: PyAV's v4l2 input first (Linux), OpenCV's VideoCapture as the fallback.

    ``device`` is an index (0 → /dev/video0) or a /dev/videoN path. PyAV is
    preferred because it gives FFmpeg timestamps and the same decode path as
    network streams; OpenCV covers platforms and cameras PyAV cannot open.
    ``backend`` says which one is in use ("pyav-v4l2" or "opencv").
    """

    def __init__(self, device: int | str, **kwargs: Any) -> None:
        text = str(device)
        if text.isdigit():
            self.index: int | None = int(text)
            self.path = f"/dev/video{self.index}"
        else:
            self.path = text
            m = re.fullmatch(r"/dev/video(\d+)", text)
            self.index = int(m.group(1)) if m else None
        self.display = self.path
        self.name = f"webcam{self.index}" if self.index is not None else os.path.basename(self.path)
        super().__init__(**kwargs)

    def _connect(self) -> _Stream:
        options = {}
        if self.requested_fps is not None:
            options["framerate"] = f"{self.requested_fps:g}"
        try:
            container = av.open(
                self.path, mode="r", format="v4l2", options=options,
                timeout=(self.open_timeout_s, self.read_timeout_s),
            )
            return _AvStream(container, "pyav-v4l2")
        except (av.error.FFmpegError, OSError, ValueError, InputError) as err:
            av_reason = _reason(err, self.open_timeout_s)
        log.info("rtvos: PyAV cannot open %s (%s); trying OpenCV", self.display, av_reason)
        target: int | str = self.index if self.index is not None else self.path
        cap = _quiet_capture(target)
        if self.requested_fps is not None:
            cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # do not let the driver queue stale frames
        if not cap.isOpened():
            cap.release()
            reason = f"PyAV v4l2: {av_reason}; OpenCV: cannot open device"
            raise _ConnectError(f"cannot open webcam {self.display}: {reason}", reason)
        return _CvStream(cap)
