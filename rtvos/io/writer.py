"""An H.264 MP4 writer (PyAV / libx264), plain or fragmented for unbounded live streams."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import av
import numpy as np
from av.video.frame import PictureType

from .base import InputError, check_fps

__all__ = ["FRAGMENT_S", "TIME_BASE", "VideoWriter"]

#: The MP4's time base: 90 kHz (MPEG's clock) keeps a source's own timestamps (variable frame rate) exactly
#: enough, and divides the common constant rates (25, 30000/1001: 3003 ticks, 60) without rounding.
TIME_BASE = Fraction(1, 90000)


FRAGMENT_S = 1.0  # live MP4s: seconds of video per fragment, the most a SIGKILL can lose


class VideoWriter:
    """Write RGB frames to an H.264 MP4 (PyAV / libx264).

    yuv420p needs even dimensions, so odd-sized frames are padded by one
    row/column replicating the bottom/right edge; the file is then
    ``even(H) x even(W)``. ``moov`` is written up front (faststart) so the
    file plays while streaming and stays readable up to a truncation point.
    ``preset`` defaults to "veryfast" so encoding does not bottleneck a
    real-time pipeline.

    ``fragmented=True`` writes a fragmented MP4: the muxer then keeps no per-frame index in memory, and a
    killed run leaves a playable file. A keyframe (and so a fragment) comes every ``FRAGMENT_S`` seconds of
    video and every fragment is flushed to disk as it is cut. ``live`` (the default for fragmented files, what
    unbounded streams use) also cuts one every ``FRAGMENT_S`` of wall-clock time (a stream delivering fewer
    frames than its nominal rate would otherwise cut one only every few seconds) and runs the encoder without
    look-ahead (zerolatency), so SIGKILL loses at most the last ``FRAGMENT_S`` seconds. ``live=False`` (file
    sources) keeps the look-ahead and B-frames: a kill also loses the encoder's few frames in flight, and the
    file is 1.8x smaller than zerolatency's (measured: 640x480 sample, veryfast, crf 23, 300 frames: 638 kB vs
    1141 kB; a plain faststart MP4: 495 kB; encode time the same within noise, zerolatency 13 % faster).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction,
        size: tuple[int, int] | None = None,
        codec: str = "libx264",
        crf: int = 23,
        pix_fmt: str = "yuv420p",
        preset: str | None = "veryfast",
        fragmented: bool = False,
        live: bool | None = None,
    ) -> None:
        self.path = Path(path)
        rate = fps if isinstance(fps, Fraction) else Fraction(check_fps(fps, str(self.path)))
        if rate <= 0:
            raise InputError(f"invalid frame rate for {self.path}: {fps!r} (must be > 0)")
        # 29.97 -> 2997/100, 30000/1001 (as a float) -> 30000/1001.
        self.rate: Fraction = rate.limit_denominator(1001)
        self.codec = codec
        self.crf = int(crf)
        self.pix_fmt = pix_fmt
        self.preset = preset
        self.fragmented = bool(fragmented)
        self.live = self.fragmented if live is None else bool(live) and self.fragmented
        self.size: tuple[int, int] | None = None
        self.frames_written = 0
        self._closed = False
        # Set once a mux or encode call failed (a full disk): FFmpeg's muxer is then in an undefined state and
        # a further mux can crash the process (SIGSEGV seen with libavformat 62), so nothing more is muxed.
        self.error: BaseException | None = None
        self._container: Any = None
        self._stream: Any = None
        self._pad: tuple[int, int] = (0, 0)
        self._last_key_s: float | None = None  # monotonic time of the last forced keyframe (fragmented only)
        self._t0: float | None = None  # the first frame's given timestamp (the video starts at 0)
        self._last_tick: int | None = None
        if size is not None:
            self._start(size)

    @property
    def fps(self) -> float:
        return float(self.rate)

    def _start(self, size: Sequence[int]) -> None:
        h, w = (int(v) for v in size)
        if h <= 0 or w <= 0:
            raise InputError(f"invalid video size {h}x{w} for {self.path}")
        self.size = (h, w)
        self._pad = (h % 2, w % 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.fragmented:
                opts = {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
            else:
                opts = {"movflags": "+faststart"}
            container = av.open(str(self.path), mode="w", options=opts)
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot create video file {self.path}: {err}") from None
        try:
            stream = cast("av.VideoStream", container.add_stream(self.codec, rate=self.rate))  # a video codec
            stream.width = w + self._pad[1]
            stream.height = h + self._pad[0]
            stream.pix_fmt = self.pix_fmt
            stream.codec_context.time_base = TIME_BASE
            options: dict[str, object] = {"crf": str(self.crf)}
            if self.preset:
                options["preset"] = self.preset
            if self.fragmented:  # bounded loss on a kill: a keyframe (a fragment) per FRAGMENT_S of video
                gop = max(1, round(float(self.rate) * FRAGMENT_S))
                options.update({"g": str(gop), "keyint_min": str(gop), "forced-idr": "1"})
                if self.live:  # and no frames held back in the encoder's look-ahead
                    options["tune"] = "zerolatency"
            stream.options = options
        except Exception:
            container.close()
            raise
        self._container, self._stream = container, stream

    def _tick(self, pts_s: float | None) -> int:
        """The frame's timestamp in TIME_BASE ticks: ``pts_s`` relative to the first frame's (a variable-rate
        source keeps its timing), else, or when it does not increase, one frame period after the last."""
        step = max(1, round(1 / (self.rate * TIME_BASE)))
        tick: int | None = None
        if pts_s is not None and np.isfinite(pts_s):
            if self._t0 is None:
                self._t0 = float(pts_s)
            tick = round((float(pts_s) - self._t0) / TIME_BASE)
        if tick is None or (self._last_tick is not None and tick <= self._last_tick):
            tick = 0 if self._last_tick is None else self._last_tick + step
        self._last_tick = tick
        return tick

    def write(self, rgb: np.ndarray, pts_s: float | None = None) -> None:
        """Append one H×W×3 uint8 RGB frame (size fixed by the first frame), shown at ``pts_s`` seconds
        (relative to the first frame's ``pts_s``; None: one frame period after the previous frame)."""
        if self._closed:
            raise ValueError(f"VideoWriter for {self.path} is closed")
        if self.error is not None:
            raise OSError(getattr(self.error, "errno", None), f"an earlier write failed ({self.error})", str(self.path))
        if self.size is None:
            if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3):
                raise ValueError(f"expected an HxWx3 uint8 RGB array, got {getattr(rgb, 'shape', type(rgb))}")
            self._start(rgb.shape[:2])
        assert self.size is not None
        if (
            not isinstance(rgb, np.ndarray)
            or rgb.dtype != np.uint8
            or rgb.shape != (self.size[0], self.size[1], 3)
        ):
            got = f"{getattr(rgb, 'shape', type(rgb))} {getattr(rgb, 'dtype', '')}".strip()
            raise ValueError(f"expected a {self.size[0]}x{self.size[1]}x3 uint8 RGB frame, got {got}")
        if self._pad != (0, 0):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = self._tick(pts_s), TIME_BASE
        if self.live:  # a keyframe (a new fragment) at least every FRAGMENT_S of wall-clock time
            now = time.monotonic()
            if self._last_key_s is None or now - self._last_key_s >= FRAGMENT_S:
                frame.pict_type = PictureType.I
                self._last_key_s = now
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except Exception as err:
            self.error = err
            raise
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finalise the MP4; safe to call twice.

        After a failed write the encoder is not flushed (its packets would go to a muxer that already failed,
        which can crash the process); the container is only closed, keeping what reached the disk."""
        self._closed = True
        if self._container is None:
            return
        container, stream = self._container, self._stream
        self._container = self._stream = None
        try:
            if self.error is None:
                for packet in stream.encode(None):
                    try:
                        container.mux(packet)
                    except Exception as err:
                        self.error = err
                        raise
        finally:
            try:
                container.close()
            except Exception as err:
                if self.error is None:
                    self.error = err
                    raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
