"""`rtvos.track(source, mask=... | boxes=... | points=...)`: segment a video as an iterator of `Result` objects.

This is the library's one way to run a stream; `rtvos segment`, `webcam` and `stream` are thin shells over it.
It builds the threaded `Pipeline` (reader thread with the drop/block policy and reconnects, bounded queues,
writer thread for any sinks) and yields on the calling thread, where the model runs:

    for r in rtvos.track("video.mp4", boxes=[(120, 40, 320, 340)]):
        print(r)                      # Result(frame=12, 854x480, objects {1: 5321 px}, step 38.2 ms)
        r.save("out/")                # palette PNG, as `rtvos segment` writes it

Leaving the loop early (``break``, an exception) closes the source and flushes the sinks; so does
`Tracking.close()` or a ``with`` block. `Tracking.summary()` has the run's figures (fps, latency, drops).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .io.base import Frame, FrameSource, FrameSourceBase, InputError
from .io.masks import DAVIS_PALETTE, check_mask_size, read_mask
from .io.pace import paced
from .io.prompt import Box, Point, check_box, check_point, prompts_to_mask
from .io.sinks import Sink
from .pipeline import Pipeline, PipelineConfig, PipelineSummary, Progress
from .results import Result

__all__ = ["ArraySource", "Tracking", "track"]

SourceLike = str | os.PathLike[str] | int | FrameSource | np.ndarray | Iterable[np.ndarray]
MaskLike = np.ndarray | str | os.PathLike[str] | Callable[[Frame], np.ndarray]


class ArraySource(FrameSourceBase):
    """Frames handed over as arrays (a T×H×W×3 array, a list, or any iterable such as a generator).

    ``bgr=True`` takes OpenCV's channel order and converts to the RGB the model expects.
    """

    def __init__(self, frames: Iterable[np.ndarray] | np.ndarray, *, fps: float = 25.0, bgr: bool = False,
                 name: str = "frames") -> None:
        super().__init__()
        self.name = name
        self.fps = float(fps)
        self.bgr = bgr
        self.is_live = False
        self._frames = frames
        self.num_frames = len(frames) if isinstance(frames, (np.ndarray, Sequence)) else None
        self.size = (0, 0)
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise InputError(f"frames array must be TxHxWx3, got shape {frames.shape}")
            self.size = (int(frames.shape[1]), int(frames.shape[2]))

    def __iter__(self) -> Iterator[Frame]:
        size: tuple[int, ...] | None = None
        for i, img in enumerate(self._frames):
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise InputError(f"frame {i} must be an HxWx3 uint8 image, got shape {arr.shape} dtype {arr.dtype}")
            if size is not None and arr.shape != size:
                raise InputError(f"frame {i} is {arr.shape[1]}x{arr.shape[0]}, earlier frames {size[1]}x{size[0]}")
            size = arr.shape
            rgb = np.ascontiguousarray(arr[..., ::-1]) if self.bgr else arr
            yield Frame(image=rgb, index=i, pts_s=i / self.fps)

    def close(self) -> None:
        close = getattr(self._frames, "close", None)  # a generator handed in is closed with the run
        if callable(close):
            close()


def _open(source: SourceLike, *, bgr: bool, fps: float | None, policy: str | None,
          transport: str | None) -> FrameSource:
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike, int)) and not isinstance(source, bool):
        from .io.source import open_source

        kwargs: dict[str, Any] = {k: v for k, v in (("transport", transport), ("policy", policy)) if v is not None}
        return open_source(source, **kwargs)
    if isinstance(source, (np.ndarray, Iterable)):
        return ArraySource(source, fps=fps or 25.0, bgr=bgr)
    raise InputError(f"source must be a path, URL, webcam index, FrameSource or frames, got {type(source).__name__}")


def _shown(v: Any) -> str:
    return repr(tuple(v.tolist() if isinstance(v, np.ndarray) else v))


def _as_list(given: Any, what: str, *lengths: int) -> list[Any]:
    """``given`` as a list of boxes/points; one box (x1, y1, x2, y2) or one point (x, y) alone is accepted as a
    list of one, as ultralytics/supervision users pass it."""
    if given is None:
        return []
    if isinstance(given, np.ndarray):
        given = given.tolist()
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise InputError(f"{what} must be a list of {what[:-1]}s, got {given!r}")
    items = list(given)
    if items and len(items) in lengths and all(isinstance(v, (int, float, np.number)) for v in items):
        return [items]  # a single one
    return items


def _coords(v: Any, what: str, form: str, *lengths: int) -> tuple[int, ...]:
    """Integer pixel coordinates of one box or point; floats (a detector's output) are rounded, NaN/inf and
    non-numbers are refused naming the value as given."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
        raise InputError(f"{what} must be {form}, got {v!r}")
    vals = list(v)
    if len(vals) not in lengths or not all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
                                           or (what == "point" and i == 2 and isinstance(x, bool))
                                           for i, x in enumerate(vals)):
        raise InputError(f"{what} must be {form} (numbers), got {_shown(vals)}")
    if not all(np.isfinite(float(x)) for x in vals):
        raise InputError(f"{what} {_shown(vals)} has a coordinate that is not a finite number")
    return tuple(int(round(float(x))) for x in vals)


def _first_mask(mask: MaskLike | None, boxes: Any, points: Any) -> tuple[np.ndarray | Callable[[Frame], np.ndarray], np.ndarray]:
    """The pipeline's first mask (an array or a function of the first frame) and the palette."""
    box_list, point_list = _as_list(boxes, "boxes", 4), _as_list(points, "points", 2, 3)
    if mask is not None and (box_list or point_list):
        raise InputError("give either mask= or boxes=/points=, not both")
    if mask is None and not box_list and not point_list:
        raise InputError("a first-frame prompt is needed: mask=, boxes=[(x1, y1, x2, y2), ...] or points=[(x, y), ...]")
    if isinstance(mask, (str, os.PathLike)):
        ids, palette = read_mask(mask)
        if not ids.any():
            raise InputError(f"first mask {mask} has no object: every pixel is 0 (background)")
        return ids, palette
    if mask is not None:
        if not callable(mask):
            arr = np.asarray(mask)
            if arr.ndim != 2:
                raise InputError(f"mask must be an HxW array of object ids, got shape {arr.shape}")
            if arr.dtype == bool:
                arr = arr.astype(np.uint8)
            if not arr.any():
                raise InputError("first mask has no object: every pixel is 0 (background)")
            return arr, DAVIS_PALETTE.copy()
        return mask, DAVIS_PALETTE.copy()
    xywh: list[Box] = []
    for b in box_list:
        x1, y1, x2, y2 = _coords(b, "box", "(x1, y1, x2, y2)", 4)
        xywh.append(check_box((x1, y1, x2 - x1, y2 - y1), shown=_shown(b)))
    pts: list[Point] = []
    for p in point_list:
        c = _coords(p, "point", "(x, y) or (x, y, positive)", 2, 3)
        pts.append(check_point(c if len(c) == 2 else (c[0], c[1], bool(c[2]))))

    def from_prompts(frame: Frame) -> np.ndarray:
        return prompts_to_mask(frame.image, xywh, pts)

    return from_prompts, DAVIS_PALETTE.copy()


class Tracking:
    """A run of `track`: iterate it for `Result` objects (once); `close()` or ``with`` ends it early."""

    def __init__(self, pipeline: Pipeline, *, bgr: bool = False) -> None:
        self.pipeline = pipeline
        self.bgr = bgr
        self._gen: Iterator[Any] | None = None
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Result]:
        with self._lock:
            if self._gen is not None:
                raise RuntimeError("a Tracking is iterated once; call rtvos.track again for another run")
            self._gen = self.pipeline.frames()
        return self._results(self._gen)

    def _results(self, frames: Iterator[Any]) -> Iterator[Result]:
        try:
            for item in frames:
                yield Result(item, bgr=self.bgr)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """End the run now: the source is closed and every sink flushed (a no-op once finished)."""
        if self._gen is None:
            self._gen = iter(())
            self.pipeline.source.close()
            return
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()

    def summary(self) -> PipelineSummary:
        return self.pipeline.summary()

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _segmenter(model: Any, *, size: int | None, device: str, backend: str, precision: str, propagation: str,
               mask_resolution: str, appearance: str | None) -> Any:
    from .backends import resolve_device
    from .models import load_model
    from .segmenter import Segmenter

    if isinstance(model, Segmenter):
        return model
    net = load_model(model) if isinstance(model, (str, os.PathLike)) else model
    return Segmenter(net, size=size, device=resolve_device(device), backend=backend, precision=precision,
                     propagation=propagation, mask_resolution=mask_resolution, appearance=appearance)


def track(
    source: SourceLike,
    *,
    mask: MaskLike | None = None,
    boxes: Sequence[Sequence[float]] | Sequence[float] | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | Sequence[float] | np.ndarray | None = None,
    model: Any = "default",
    size: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    precision: str = "fp32",
    propagation: str = "soft",
    mask_resolution: str = "full",
    appearance: str | None = None,
    bgr: bool = False,
    fps: float | None = None,
    max_frames: int | None = None,
    policy: str | None = None,
    transport: str | None = None,
    pace: bool = False,
    sinks: Sequence[Sink] = (),
    progress: Progress = "off",
    threaded: bool = True,
    palette: np.ndarray | None = None,
) -> Tracking:
    """Segment ``source`` from a first-frame prompt; iterate the returned `Tracking` for `Result` objects.

    ``source``: a video file, a folder of frames, a webcam index or device, an rtsp/rtmp/http URL (what the CLI
    takes), a `FrameSource`, or frames (a T×H×W×3 uint8 array or an iterable of H×W×3 arrays, BGR with
    ``bgr=True``; results' images and plots then come back in BGR too). Prompt, exactly one kind: ``mask`` (an
    H×W id array, a PNG path, or a function of the first `Frame`), ``boxes`` [(x1, y1, x2, y2), ...] (one
    object each; a single box alone, an N×4 array and float coordinates are accepted) and/or ``points``
    [(x, y) or (x, y, positive), ...] (clicks inside a box refine it; the rest make one more object).
    ``model``: "default", a name `rtvos.models.model_names()` lists, a checkpoint path, a loaded model or a
    ready `Segmenter` (one run at a time: a second concurrent run on it raises RuntimeError). ``appearance``:
    "grid" (the causal colour model fused with the propagated scores), "none", or None: grid wherever it
    applies (soft propagation at frame resolution). ``pace``: hand a file's frames out at its frame rate, as a
    camera would (what a person watching expects; `rtvos.io.pace`), instead of as fast as they decode; live
    sources are real time anyway. ``palette`` (256×3) colours the PNGs (default: the mask
    PNG's, else DAVIS's). ``sinks`` (e.g. `rtvos.io.sinks.MaskSink`) run on the writer thread as in the CLI.
    Misuse (a bad prompt, a missing file) raises `InputError` here, before the model loads.
    """
    first, own_palette = _first_mask(mask, boxes, points)
    palette = own_palette if palette is None else np.asarray(palette, dtype=np.uint8)
    config = PipelineConfig(max_frames=max_frames, progress=progress, threaded=threaded)
    src = _open(source, bgr=bgr, fps=fps, policy=policy, transport=transport)
    if pace:
        src = paced(src)
    try:
        if isinstance(first, np.ndarray) and src.size[0] > 0:
            check_mask_size(first, src.size, "mask", str(src.name))
        seg = _segmenter(model, size=size, device=device, backend=backend, precision=precision,
                         propagation=propagation, mask_resolution=mask_resolution, appearance=appearance)
    except BaseException:
        src.close()
        raise
    return Tracking(Pipeline(src, seg, sinks, first, palette=palette, config=config), bgr=bgr)

