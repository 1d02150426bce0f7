"""Outputs of the streaming pipeline: overlay MP4, palette PNGs, a JSON-lines log, a window, a browser view.

Every sink runs on the pipeline's writer thread, one frame at a time, in the order given; the overlay is drawn
once per frame (lazily, by whichever sink asks first) and shared. A sink that must see the finished frame
(the JSON log wants ``output_s``, the time every other sink was done) sets ``runs_last``. A sink that wants the
run to end normally (the user closed the window) raises :class:`StopPipeline`; any other exception stops the
run and reaches the caller.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..common import MASK_VIDEO_MODES, display_available
from .base import Frame, InputError
from .masks import DAVIS_PALETTE, write_mask
from .overlay import overlay as draw_overlay
from .record import frame_record
from .writer import VideoWriter

if TYPE_CHECKING:
    from ..segmenter import StepResult

__all__ = [
    "JsonlSink",
    "close_sinks",
    "MASK_VIDEO_MODES",
    "MaskVideoSink",
    "LiveViewSink",
    "MaskSink",
    "SegmentedFrame",
    "Sink",
    "StopPipeline",
    "StreamInfo",
    "VideoSink",
    "WindowSink",
    "check_output_folder",
    "check_video_path",
    "display_available",
    "is_mask_png_name",
    "mask_png_name",
    "remove_previous_masks",
]


class StopPipeline(Exception):
    """Raised by a sink to end the run normally (e.g. the user closed the window); not an error."""


@dataclass(frozen=True)
class StreamInfo:
    """What a sink may need before the first frame: the source's name, rate and the mask palette."""

    name: str
    fps: float
    size: tuple[int, int]  # (H, W) reported by the source; (0, 0) when it is only known from the first frame
    is_live: bool
    palette: np.ndarray = field(default_factory=lambda: DAVIS_PALETTE.copy())


@dataclass
class SegmentedFrame:
    """One frame after segmentation, handed to every sink in turn.

    ``frame_index`` counts frames through the run (0-based); ``frame.source_index`` is the source's own index (live sources
    skip indices when they drop frames). ``stages_ms`` starts with decode and the model's stages, and each sink
    adds its own time as it finishes, so a ``runs_last`` sink sees the whole split.
    """

    frame_index: int
    frame: Frame
    mask: np.ndarray
    step: StepResult
    palette: np.ndarray
    captured_s: float  # the source's capture stamp, else the wall time the reader received the frame
    dropped: int  # cumulative frames lost before the model (source + pipeline)
    stages_ms: dict[str, float]
    live: Mapping[str, Any] = field(default_factory=dict)  # running stats for viewers (fps, latency, ...)
    output_s: float | None = None  # time.time() once every non-``runs_last`` sink is done
    ready_s: float | None = None  # time.time() the first mask was in hand: no frame's latency starts earlier
    _overlay: np.ndarray | None = field(default=None, repr=False)

    @property
    def step_ms(self) -> float:
        return self.step.total_ms

    @property
    def latency_ms(self) -> float | None:
        """From when the model could take the frame (its capture, or the first mask's arrival if later: the
        time a person takes to draw the first box is not latency) to every sink done."""
        if self.output_s is None:
            return None
        start = self.captured_s if self.ready_s is None else max(self.captured_s, self.ready_s)
        return (self.output_s - start) * 1e3

    def overlay(self) -> np.ndarray:
        """The coloured overlay (H×W×3 uint8 RGB), drawn on first use and timed as stage "overlay"."""
        if self._overlay is None:
            t = time.perf_counter()
            self._overlay = draw_overlay(self.frame.image, self.mask)  # display colours; PNGs keep the palette
            self.stages_ms["overlay"] = (time.perf_counter() - t) * 1e3
        return self._overlay

    def object_areas(self) -> dict[int, int]:
        """Pixel count per tracked object id (0 for an object that is currently lost)."""
        counts = np.bincount(self.mask.ravel(), minlength=256)
        return {i: int(counts[i]) for i in self.step.object_ids if i != 0}


class Sink:
    """One output. ``open`` and ``close`` run on the writer thread too, so window toolkits stay on one thread."""

    name: ClassVar[str] = "sink"  # its key in SegmentedFrame.stages_ms
    runs_last: ClassVar[bool] = False

    def open(self, info: StreamInfo) -> None:
        """Called once before the first frame."""

    def write(self, item: SegmentedFrame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release; called once, also after an error, so what was written stays valid."""

    def describe(self) -> str | None:
        """Where the output is, for the closing message (None: nothing to point at)."""
        return None




class VideoSink(Sink):
    """Overlay MP4 (H.264) with the source's timestamps (its nominal frame rate where it has none)."""

    name = "encode"  # its key in stages_ms
    kind = "overlay"

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer: VideoWriter | None = None
        self._live = False

    def image(self, item: SegmentedFrame) -> np.ndarray:
        return item.overlay()

    failed: str | None = None  # why the file is not a complete MP4 (a write or the final flush failed)

    def open(self, info: StreamInfo) -> None:
        # A fragmented MP4 keeps the muxer's memory flat (live streams have no end) and survives a kill (SIGKILL,
        # OOM, power) with everything but the last second: for files too, where a plain MP4 would lose it all.
        self._writer = VideoWriter(self.path, fps=self.fps or info.fps, fragmented=True, live=info.is_live)
        self._live = info.is_live

    def write(self, item: SegmentedFrame) -> None:
        assert self._writer is not None, "VideoSink.open was not called"
        image = self.image(item)
        t = time.perf_counter()
        # The source's timing, not a constant rate: a file's own timestamps (variable frame rate kept), a live
        # stream's capture times (monotonic across reconnects; a 25 fps-nominal camera delivering 4 fps, or
        # frames dropped for a slow model, still play in real time).
        pts = item.captured_s if self._live else item.frame.pts_s
        try:
            self._writer.write(image, pts)
        except OSError as e:
            raise self._fail(e) from None
        item.stages_ms[self.name] = (time.perf_counter() - t) * 1e3

    def _fail(self, e: OSError) -> OSError:
        self.failed = _space_reason(e)
        return OSError(e.errno, f"{self.failed} while writing", str(self.path))

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as e:
                raise self._fail(e) from None

    @property
    def frames_written(self) -> int:
        return 0 if self._writer is None else self._writer.frames_written

    def describe(self) -> str:
        if self.failed:
            return f"{self.kind}: {self.path} is INCOMPLETE and may not play ({self.failed})"
        return f"{self.kind}: {self.path}"


class MaskVideoSink(VideoSink):
    """The masks as an MP4 for compositing: ``mode="color"`` paints each id in its palette colour, ``"alpha"``
    is a matte (object white, background black). H.264 is lossy: use the PNGs where exact ids matter."""

    name = "mask_video"
    kind = "masks video"

    def __init__(self, path: str | os.PathLike[str], mode: str = "color", fps: float | None = None) -> None:
        if mode not in MASK_VIDEO_MODES:
            raise InputError(f"mask video mode must be one of {MASK_VIDEO_MODES}, got {mode!r}")
        super().__init__(path, fps)
        self.mode = mode

    def image(self, item: SegmentedFrame) -> np.ndarray:
        if self.mode == "alpha":
            return np.repeat(((item.mask > 0) * np.uint8(255))[..., None], 3, axis=2)
        return np.asarray(item.palette, dtype=np.uint8)[item.mask]


class MaskSink(Sink):
    """One DAVIS palette PNG per frame, ``folder/%05d.png`` by pipeline frame number, with the input palette."""

    name = "png"

    def __init__(self, folder: str | os.PathLike[str], palette: np.ndarray | None = None) -> None:
        self.folder = Path(folder)
        self.palette = palette
        self.written = 0

    def open(self, info: StreamInfo) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.palette is None:
            self.palette = info.palette

    def write(self, item: SegmentedFrame) -> None:
        t = time.perf_counter()
        path = self.folder / mask_png_name(item.frame_index)
        try:
            write_mask(path, item.mask, self.palette)  # atomic: a failed write leaves no partial PNG
        except OSError as e:
            raise OSError(e.errno, f"{_space_reason(e)} while writing", str(path)) from None
        item.stages_ms[self.name] = (time.perf_counter() - t) * 1e3
        self.written += 1

    def describe(self) -> str:
        return f"masks:   {self.folder}/%05d.png ({self.written} complete PNGs)"


def _space_reason(e: OSError) -> str:
    import errno as _errno

    if e.errno == _errno.ENOSPC:
        return "no space left on the device"
    if e.errno in (_errno.EDQUOT, _errno.EFBIG):
        return f"out of space ({e.strerror})"
    return e.strerror or str(e)


class JsonlSink(Sink):
    """One JSON object per frame, flushed per line so a killed run keeps its log.

    Each line is `rtvos.io.record.frame_record` (the layout of `Result.to_json`, schema `frame.schema.json`);
    ``rle=False`` leaves out the objects' COCO RLE. Runs after every other sink, so ``output_s`` and
    ``latency_ms`` cover them.
    """

    name = "jsonl"
    runs_last = True

    def __init__(self, path: str | os.PathLike[str], rle: bool = True) -> None:
        self.path = Path(path)
        self.rle = rle
        self._file: IO[str] | None = None
        self.lines = 0

    def open(self, info: StreamInfo) -> None:
        if self.path.parent != Path("."):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise InputError(f"cannot write JSON log {self.path}: {err.strerror or err}") from None

    failed: str | None = None  # why the log stops early (a write failed: its last line may be cut)

    def write(self, item: SegmentedFrame) -> None:
        assert self._file is not None, "JsonlSink.open was not called"
        if self.failed:
            return  # refuse quietly: the first failure was already raised
        try:
            self._file.write(json.dumps(frame_record(item, rle=self.rle), separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as e:
            self.failed = _space_reason(e)
            raise OSError(e.errno, f"{self.failed} while writing", str(self.path)) from None
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError as e:  # the buffered tail could not be written
                if not self.failed:
                    self.failed = _space_reason(e)
                    raise OSError(e.errno, f"{self.failed} while writing", str(self.path)) from None

    def describe(self) -> str:
        if self.failed:
            return (f"log:     {self.path} is INCOMPLETE: {self.lines} complete line(s), the last one may be cut "
                    f"({self.failed})")
        return f"log:     {self.path} ({self.lines} lines)"


class WindowSink(Sink):
    """An on-screen window: OpenCV's highgui where it is built in, else Tk (opencv-python-headless has none).

    Esc, q or closing the window ends the run normally.
    """

    name = "window"

    def __init__(self, title: str = "rtvos") -> None:
        self.title = title
        self.backend: str | None = None
        self._closed = False
        self._tk: Any = None
        self._label: Any = None
        self._photo: Any = None

    @staticmethod
    def check_display() -> None:
        """One-line InputError when there is no display, so apps can fail before loading a model."""
        if not display_available():
            raise InputError("no display (DISPLAY is not set); use --serve to view in a browser")

    def open(self, info: StreamInfo) -> None:
        self.check_display()
        import cv2

        try:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE)
            self.backend = "cv2"
            return
        except cv2.error:
            pass  # headless build: no highgui
        try:
            import tkinter as tk

            from PIL import ImageTk  # noqa: F401 - fail here, not on the first frame
        except ImportError as err:
            raise InputError(
                f"cannot open a window: OpenCV has no GUI and Tk is not installed ({err}); "
                "use --serve to view in a browser"
            ) from None
        try:
            root = tk.Tk()
        except tk.TclError as err:
            raise InputError(
                f"cannot open a window on display {os.environ.get('DISPLAY', '')!r}: {err}; "
                "use --serve to view in a browser"
            ) from None
        root.title(self.title)
        root.protocol("WM_DELETE_WINDOW", self._on_close)
        for key in ("<Escape>", "q"):
            root.bind(key, lambda _e: self._on_close())
        self._label = tk.Label(root)
        self._label.pack()
        self._tk = root
        self.backend = "tk"

    def _on_close(self) -> None:
        self._closed = True

    def write(self, item: SegmentedFrame) -> None:
        image = item.overlay()
        t = time.perf_counter()
        if self.backend == "cv2":
            import cv2

            cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
            if key in (27, ord("q")) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                self._closed = True
        elif self.backend == "tk":
            from PIL import Image, ImageTk

            self._photo = ImageTk.PhotoImage(Image.fromarray(image), master=self._tk)
            self._label.configure(image=self._photo)
            self._tk.update()
        item.stages_ms[self.name] = (time.perf_counter() - t) * 1e3
        if self._closed:
            raise StopPipeline("window closed")

    def close(self) -> None:
        if self.backend == "cv2":
            import cv2

            cv2.destroyWindow(self.title)
        elif self.backend == "tk" and self._tk is not None:
            root, self._tk = self._tk, None
            # Drop every reference to the Tcl interpreter on this thread: deleting it from another one aborts
            # the process ("Tcl_AsyncDelete: async handler deleted by the wrong thread").
            self._photo = self._label = None
            try:
                root.destroy()
            except Exception:  # already gone with the display
                pass
            del root
            import gc

            gc.collect()
        self.backend = None


class LiveViewSink(Sink):
    """Publishes the overlay and running stats to a live view (a :class:`rtvos.web.LiveView` or one stream's
    :class:`rtvos.web.ViewChannel`); never blocks the pipeline.

    Drawing the overlay is the cost, so a view that many streams feed (``rtvos serve``) can ask for it only while
    a browser watches (``only_watched``) and at most ``max_fps`` times a second; the stats go out every frame.
    The view belongs to the caller (it may have been used to pick the first box), so closing the sink only
    marks the run ended there (the page keeps its last frame); it does not close the view.
    """

    name = "live"

    def __init__(self, view: Any, *, max_fps: float | None = None, only_watched: bool = False) -> None:
        if max_fps is not None and not max_fps > 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.view = view
        self.min_period_s = 0.0 if max_fps is None else 1.0 / max_fps
        self.only_watched = only_watched
        self._last_s = -math.inf

    def write(self, item: SegmentedFrame) -> None:
        t = time.perf_counter()
        stats = dict(item.live)
        stats.update(frame_index=item.frame_index, source_index=item.frame.source_index, step_ms=round(item.step_ms, 1),
                     objects=len([i for i in item.step.object_ids if i != 0]))
        if (self.only_watched and not self.view.watchers) or t - self._last_s < self.min_period_s:
            self.view.publish_stats(stats)
        else:
            self._last_s = t
            self.view.publish(item.overlay(), stats)
        item.stages_ms[self.name] = (time.perf_counter() - t) * 1e3

    def close(self) -> None:
        self.view.finish()

    def describe(self) -> str | None:
        url = getattr(self.view, "url", None)
        return f"live:    {url}" if url else None


#: What a run writes into its output folder; a folder holding any of these already has results.
RESULT_PATTERNS = ("*.png", "*.mp4", "*.jsonl", "*.jpg")

#: What the MP4 sinks can write: H.264 in an ISO-BMFF (mp4/mov) or Matroska container.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


def close_sinks(sinks: list[Sink]) -> BaseException | None:
    """Close every sink even when one fails (each must flush what it holds); returns the first error."""
    first: BaseException | None = None
    for sink in sinks:
        try:
            sink.close()
        except BaseException as err:
            first = first or err
    return first


def mask_png_name(n: int) -> str:
    """The file name of pipeline frame ``n``'s mask PNG (one definition, for MaskSink and the clean-up)."""
    return f"{n:05d}.png"


def is_mask_png_name(name: str) -> bool:
    """Whether ``name`` is one a MaskSink writes (``mask_png_name(n)`` for some n)."""
    stem, dot, ext = name.rpartition(".")
    return dot == "." and ext == "png" and stem.isdigit() and mask_png_name(int(stem)) == name


def check_output_folder(folder: str | os.PathLike[str], exist_ok: bool = False) -> None:
    """Refuse an output folder that already holds results (stale frames would mix with new ones), unless
    ``exist_ok``. Nothing is removed here: :func:`remove_previous_masks` does that once every check passed."""
    root = Path(folder)
    if not root.is_dir():
        return
    found = sorted({p for pat in RESULT_PATTERNS for p in root.glob(pat) if p.is_file()})
    if found and not exist_ok:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise InputError(f"output folder {root} already holds results ({len(found)} files: {names}); "
                         "pass --exist-ok to overwrite them")


def remove_previous_masks(folder: str | os.PathLike[str]) -> int:
    """Remove the mask PNGs an earlier run wrote into ``folder`` (so it holds only this run's frames); returns
    how many. Only what a run writes goes: 00000.png, 00001.png, ... up to the first gap; any other PNG (2024.png,
    a lone 12345.png) was not written by rtvos and is kept."""
    root = Path(folder)
    n = 0
    while (root / mask_png_name(n)).is_file():
        (root / mask_png_name(n)).unlink()
        n += 1
    return n


def check_video_path(path: str | os.PathLike[str], what: str) -> None:
    """One line naming ``what`` (the option) and the path when the video cannot be written as asked: a folder, a
    suffix FFmpeg cannot pair with H.264, or no H.264 encoder. Checked before any model loads or file is made."""
    p = Path(path)
    if str(path).endswith(("/", os.sep)) or p.is_dir():
        raise InputError(f"{what} {path} is a folder, expected a video file (e.g. {p / 'video.mp4'})")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{what} {path}: cannot write H.264 video to a '{p.suffix or 'suffix-less'}' file; use one "
                         f"of {', '.join(VIDEO_SUFFIXES)}")
    import av

    try:
        av.codec.Codec("libx264", "w")
    except Exception:
        raise InputError(f"{what} {path}: this FFmpeg build has no H.264 encoder (libx264)") from None
