"""File sources: a video file (PyAV / FFmpeg) and a folder of images (the DAVIS ``JPEGImages/<seq>/`` layout).

Both satisfy :class:`~rtvos.io.base.FrameSource`; bad files raise
:class:`~rtvos.io.base.InputError` with a one-line message naming the path.
Open them through :func:`rtvos.io.open_source`, which also handles webcams
and streams. This module imports only :mod:`rtvos.io.base` from the package.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import (
    DEFAULT_FOLDER_FPS,
    IMAGE_EXTENSIONS,
    Frame,
    FrameSource,
    FrameSourceBase,
    InputError,
    check_fps,
    natural_key,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "InputError",
    "VideoFileSource",
]


class ImageFolderSource(FrameSourceBase):
    """Frames stored as individual images (DAVIS ``JPEGImages/<seq>/`` layout)."""

    def __init__(self, folder: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = Path(folder)
        self.name = self.path.name or str(self.path)
        self.fps = DEFAULT_FOLDER_FPS if fps is None else check_fps(fps, str(self.path))
        try:
            entries = [p for p in self.path.iterdir() if p.is_file()]
        except OSError as err:
            raise InputError(f"cannot list folder {self.path}: {err.strerror or err}") from None
        self.files: list[Path] = sorted(
            (p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: natural_key(p.name),
        )
        if not self.files:
            exts = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            raise InputError(f"no images ({exts}) in folder: {self.path}")
        self.num_frames = len(self.files)
        # Header-only read: opening a 10k-frame folder must not decode every image.
        first = self.files[0]
        try:
            with Image.open(first) as im:
                width, height = im.size
        except (OSError, UnidentifiedImageError):
            raise InputError(f"cannot read image: {first}") from None
        self.size = (int(height), int(width))

    def _read(self, path: Path) -> np.ndarray:
        try:
            data = np.fromfile(path, dtype=np.uint8)  # unicode-safe, unlike cv2.imread
        except OSError as err:
            raise InputError(f"cannot read image: {path} ({err.strerror or err})") from None
        # Ignore EXIF orientation so frames line up with masks read through PIL.
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
        bgr = cv2.imdecode(data, flags) if data.size else None
        if bgr is None:
            raise InputError(f"cannot decode image: {path}")
        if bgr.shape[:2] != self.size:
            h, w = bgr.shape[:2]
            raise InputError(
                f"frame size {h}x{w} of {path} differs from {self.size[0]}x{self.size[1]} "
                f"of {self.files[0].name} (all frames must have the same size)"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            image = self._read(path)
            self._frames_out += 1
            yield Frame(source_index=index, image=image, pts_s=index / self.fps, captured_s=time.time())


class VideoFileSource(FrameSourceBase):
    """A video file decoded with PyAV (FFmpeg), first video stream only.

    Truncation is detected honestly: FFmpeg's demuxer usually ends a
    chopped file silently, so besides decoder errors we treat a packet
    flagged corrupt (short read) or fewer packets than the container's
    frame count as damage. Frames decoded before that point are yielded,
    then :class:`InputError` names the file and the failing frame index.
    Files whose container does not store a frame count can only be checked
    for corrupt packets and decoder errors.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self._container: Any = None
        self._consumed = False
        if fps is not None:
            fps = check_fps(fps, str(self.path))  # before opening: nothing to leak
        self._open()
        stream = cast(Any, self._container).streams.video[0]  # set by _open()
        if fps is not None:
            self.fps = fps
        else:
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else DEFAULT_FOLDER_FPS
        self.num_frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
        cc = stream.codec_context  # None when the codec parameters are missing
        self.size = (int(cc.height), int(cc.width)) if cc is not None else (0, 0)
        if self.size[0] <= 0 or self.size[1] <= 0:
            self.close()
            raise InputError(f"video has no frame size (not a playable video?): {self.path}")
        # Phones store portrait video as landscape frames plus a display-matrix rotation; apply it on decode as
        # every player does, so masks drawn on the upright picture fit and the overlay plays upright.
        self.rotation = self._probe_rotation()
        if self.rotation % 180:
            self.size = (self.size[1], self.size[0])

    def _open(self) -> None:
        try:
            container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError):
            raise InputError(f"cannot open as video (unsupported or corrupt file): {self.path}") from None
        if not container.streams.video:
            container.close()
            raise InputError(f"no video stream in file (not a video or corrupt): {self.path}")
        stream = container.streams.video[0]
        # FFmpeg threading pays off for large frames or many cores. On 2 cores at ≤ 720p it cost more than it
        # saved (854x480 H.264, loaded machine, 120 frames: 400 ms threaded vs 169 ms single, p95 8 vs 4 ms),
        # because the model already uses both cores.
        cc = stream.codec_context
        if (os.cpu_count() or 1) > 2 or (cc.width or 0) * (cc.height or 0) > 1280 * 720:
            stream.thread_type = "AUTO"
        self._container = container

    def _cut_transport_stream(self) -> bool:
        """An MPEG-TS file whose size is not a whole number of transport packets (188, 192 or 204 bytes) was cut
        off: TS declares no frame count, and FFmpeg ends such a file silently, its last frame half decoded."""
        if "mpegts" not in str(getattr(self._container.format, "name", "")):
            return False
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        return all(size % n for n in (188, 192, 204))

    def _probe_rotation(self) -> int:
        """The display rotation (degrees counter-clockwise, a multiple of 90) from the first decoded frame's
        display matrix; 0 when there is none or nothing decodes (the iteration then reports the damage)."""
        rotation = 0
        try:
            for vf in self._container.decode(video=0):
                rotation = int(round(float(getattr(vf, "rotation", 0) or 0) / 90.0)) * 90 % 360
                break
        except (av.error.FFmpegError, ValueError):
            pass
        self._consumed = True  # the first iteration re-opens the file from its start
        return rotation

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _to_frame(self, index: int, vf: Any, time_base: Any) -> Frame:
        image = vf.to_ndarray(format="rgb24")
        if self.rotation:
            image = np.rot90(image, k=self.rotation // 90)  # counter-clockwise, as the display matrix says
        image = np.ascontiguousarray(image)
        if image.shape[:2] != self.size:
            h, w = image.shape[:2]
            raise InputError(
                f"{self.path}: frame {index} is {h}x{w} but the stream started at "
                f"{self.size[0]}x{self.size[1]} (resolution changes are not supported)"
            )
        # frame.time is NaN for frames drained at flush; derive it from pts instead.
        pts_s = float(vf.pts * time_base) if vf.pts is not None and time_base else None
        self._frames_out += 1
        return Frame(source_index=index, image=image, pts_s=pts_s, captured_s=time.time())

    def __iter__(self) -> Iterator[Frame]:
        # A second pass re-opens the file: seeking to 0 is not exact for all codecs.
        if self._consumed or self._container is None:
            self.close()
            self._open()
        self._consumed = True
        container = self._container
        stream = container.streams.video[0]
        time_base = stream.time_base
        index = 0
        packets = 0
        last_fed_dts: int | None = None
        first_lost_dts: int | None = None
        damage: str | None = None
        cut_ts = self._cut_transport_stream()
        held: Any = None  # cut_ts: each packet is fed once the next one arrived; the last one is incomplete
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    break  # PyAV's end-of-stream marker; we flush ourselves below
                if packet.is_corrupt:
                    # Short read at EOF: feeding it would yield a half-grey frame.
                    damage = "truncated or corrupt data"
                    first_lost_dts = packet.dts
                    break
                if cut_ts:
                    packet, held = held, packet
                    if packet is None:
                        continue
                packets += 1
                last_fed_dts = packet.dts
                for vf in packet.decode():
                    yield self._to_frame(index, vf, time_base)
                    index += 1
            if damage is None and self.num_frames is not None and packets < self.num_frames:
                damage = "file ends early"
            if damage is None and cut_ts:
                damage = "the file ends inside a transport-stream packet"
                first_lost_dts = None if held is None else held.dts
            # Draining after damage may return frames that come *after* a lost
            # one in display order (mislabelled indices). A lost packet's pts is
            # >= its dts > every fed dts, so frames with pts below that bound
            # have no missing predecessor and are safe to yield.
            if damage is None:
                cutoff: int | None = None
            elif first_lost_dts is not None:
                cutoff = first_lost_dts
            elif last_fed_dts is not None:
                cutoff = last_fed_dts + 1
            else:
                cutoff = -(2**63)  # no timing info: yield nothing uncertain
            for vf in stream.decode(None):
                if cutoff is not None and (vf.pts is None or vf.pts >= cutoff):
                    continue
                yield self._to_frame(index, vf, time_base)
                index += 1
        except av.error.FFmpegError as err:
            damage = f"decoding error ({type(err).__name__})"
        if damage is not None:
            expected = f" of {self.num_frames} expected" if self.num_frames else ""
            raise InputError(
                f"{self.path}: video is truncated or corrupt ({damage}); decoding stopped at "
                f"frame {index} ({index}{expected} frames decoded)"
            )
