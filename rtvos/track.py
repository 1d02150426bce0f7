"""`rtvos.track(source, mask=... | boxes=... | points=...)`: segment a video as an iterator of `Result` objects.

This is the library's one front door for a stream: `rtvos segment`, `webcam` and `stream` parse their flags and
call it with plain values (paths, boxes, output specs, a live view address); every check on them happens here,
once, before the model loads. It builds the `Pipeline` (`Reader` → model → `SinkWriter`) and yields on the
calling thread, where the model runs:

    for r in rtvos.track("video.mp4", boxes=[(120, 40, 320, 340)]):
        print(r)                      # Result(frame_index=12, 854x480, objects {1: 5321 px}, step 38.2 ms)
        r.save("out/")                # palette PNG, as `rtvos segment` writes it

Leaving the loop early (``break``, an exception) closes the source and flushes the sinks; so does
`Tracking.close()` or a ``with`` block. `Tracking.summary()` has the run's figures (fps, latency, drops);
`Tracking.run()` consumes the stream without building a `Result` per frame (what the CLI does).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import BOX_FORMAT, DEFAULT_OUT, stop_reason
from .io.arrays import ArraySource
from .io.base import Frame, InputError
from .io.masks import check_mask_size
from .io.outputs import Outputs, build_sinks, check_output_paths, parse_serve, safe_name
from .io.pace import paced
from .io.prompt import MaskLike, box_from, check_prompts, given_mask, prompts_to_mask
from .io.sinks import Sink, WindowSink, remove_previous_masks
from .io.source import SourceLike, as_source
from .pipeline import Pipeline, PipelineConfig, PipelineSummary, Progress
from .results import Result

log = logging.getLogger("rtvos")
Say = Callable[[str], None]
OutPath = str | os.PathLike[str] | bool | None

__all__ = ["ArraySource", "MaskLike", "SourceLike", "Tracking", "build_segmenter", "track"]



def _from_browser(view: Any, say: Say) -> Callable[[Frame], np.ndarray]:
    """The first mask drawn on the live view: the first frame is shown, the boxes (x1, y1, x2, y2) awaited."""

    def first(frame: Frame) -> np.ndarray:
        view.request_box(frame.image)
        say(f"drag a box around each object at {view.url}, then start (Ctrl-C to quit)")
        while (boxes := view.wait_boxes(timeout=0.5)) is None:
            if view.closed:
                raise InputError("the live view closed before a box was drawn")
        say(f"{len(boxes)} object(s) {'; '.join(','.join(map(str, b)) for b in boxes)}, segmenting")
        return prompts_to_mask(frame.image, [box_from(b, "xyxy") for b in boxes])

    return first


class Tracking:
    """A run of `track`: iterate it for `Result` objects (once), or call :meth:`run`; `close()` or ``with``
    ends it early. It owns the live view, if any: :meth:`keep_serving` keeps the page up after the end."""

    def __init__(self, pipeline: Pipeline, *, bgr: bool = False, view: Any = None, say: Say | None = None,
                 model_line: str = "") -> None:
        self.pipeline = pipeline
        self.bgr = bgr
        self.view = view
        self.model_line = model_line
        self._say = say or (lambda msg: log.info("rtvos: %s", msg))
        self._gen: Iterator[Any] | None = None
        self._lock = threading.Lock()

    def _start(self) -> Iterator[Any]:
        with self._lock:
            if self._gen is not None:
                raise RuntimeError("a Tracking is iterated once; call rtvos.track again for another run")
            self._gen = self.pipeline.frames()
        return self._gen

    def __iter__(self) -> Iterator[Result]:
        return self._results(self._start())

    def _results(self, frames: Iterator[Any]) -> Iterator[Result]:
        try:
            for item in frames:
                yield Result(item, bgr=self.bgr)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
            self._close_view()

    def run(self) -> PipelineSummary:
        """Run to the end without building a `Result` per frame; Ctrl-C or `rtvos.Stopped` between two frames
        ends it normally, flushed, like one landing inside the pipeline. On a failure what was kept is said
        before the error is raised; a run that produced no frame raises `InputError` (unless stopped)."""
        frames = self._start()
        try:
            try:
                for _ in frames:
                    pass
            except KeyboardInterrupt as stop:
                self.pipeline.stop(stop_reason(stop))
                self.close()
        except BaseException:
            self.close()  # flush every sink first: what is said below is what stays on disk
            done = self.summary().frames
            if done:
                kept = "; ".join(self.outputs())
                self._say(f"{done} frame(s) processed before stopping; {kept or 'no file outputs'}")
            raise
        summary = self.summary()
        if summary.frames == 0:
            self._close_view()
            if summary.interrupted:
                self._say(f"stopped before the first frame ({summary.stop_reason})")
                return summary
            raise InputError(f"no frames decoded from {summary.name}")
        return summary

    def outputs(self) -> list[str]:
        """Where each output is (one line per sink that writes something)."""
        return [line for sk in self.pipeline.writer.sinks if sk.name != "live" and (line := sk.describe())]

    def report(self) -> str:
        """The closing lines: the summary (what latency counts included), the model, then every output."""
        lines = [self.summary().describe()]
        if self.model_line:
            lines.append(f"model: {self.model_line}")
        return "\n".join(lines + self.outputs())

    def keep_serving(self) -> None:
        """After a run that ended on its own, keep the live view up (the person watching sees the end) until
        Ctrl-C or SIGTERM; a no-op without a live view or after a stop."""
        s = self.summary()
        if self.view is None or not s.frames or s.interrupted:
            self._close_view()
            return
        self._say(f"the source has ended; the live view stays up at {self.view.url} until Ctrl-C")
        try:
            self.view.finish()
            self.view.wait_closed()
        except KeyboardInterrupt:
            pass
        finally:
            self._close_view()

    def _close_view(self) -> None:
        view, self.view = self.view, None
        if view is not None:
            view.close()

    def close(self) -> None:
        """End the run now: the source is closed and every sink flushed (a no-op once finished)."""
        if self._gen is None:
            self._gen = iter(())
            self.pipeline.source.close()
            self.pipeline.writer.finish()
        else:
            close = getattr(self._gen, "close", None)
            if close is not None:
                close()
        self._close_view()

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


def build_segmenter(model: Any, *, size: int | None, device: str, backend: str, precision: str, propagation: str,
               mask_resolution: str, appearance: str | None, threads: int | None = None,
               say: Say | None = None) -> Any:
    """A ready Segmenter as given, or one built from a model spec. With ``say``, untrained weights get a loud
    banner through it (instead of a RandomWeightsWarning)."""
    from .backends import resolve_device
    from .models import load_model, load_model_reporting
    from .segmenter import Segmenter

    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads must be an integer >= 1, got {threads!r}")
        import torch

        torch.set_num_threads(threads)
    if isinstance(model, Segmenter):
        return model
    if isinstance(model, (str, os.PathLike)):
        if say is None:
            net = load_model(model)
        else:
            net, random_weights = load_model_reporting(model)
            if random_weights:
                say("!" * 100 + f"\n!! WARNING: {net.meta.get('source')}: the model is NOT TRAINED; masks are "
                    "meaningless (plumbing only).\n" + "!" * 100)
    else:
        net = model
    return Segmenter(net, size=size, device=resolve_device(device), backend=backend, precision=precision,
                     propagation=propagation, mask_resolution=mask_resolution, appearance=appearance)


def _model_line(seg: Any, backend: str, precision: str) -> str:
    from .backends import resolve_backend

    if not seg.has_network:
        return f"{seg.describe()}; {seg.device}"
    h, w = seg.size
    return (f"{seg.describe()}; network input {h}x{w} (short side {seg.size_spec}), backend "
            f"{resolve_backend(backend, seg.device, precision)} {precision}; {seg.device}")


def _out_path(given: OutPath, default: Path) -> Path | None:
    if given is None or given is False:
        return None
    return default if given is True else Path(given)


def track(
    source: SourceLike | None = None,
    *,
    mask: MaskLike | None = None,
    boxes: Sequence[Sequence[float]] | Sequence[float] | Sequence[str] | str | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | Sequence[float] | Sequence[str] | str | np.ndarray | None = None,
    box_format: str = BOX_FORMAT,
    masks: OutPath = None,
    overlay: OutPath = None,
    jsonl: str | os.PathLike[str] | None = None,
    mask_video: str | os.PathLike[str] | None = None,
    mask_video_mode: str = "color",
    show: bool = False,
    serve: str | tuple[str, int] | None = None,
    exist_ok: bool = False,
    names: dict[str, str] | None = None,
    say: Say | None = None,
    model: Any = "default",
    size: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    precision: str = "fp32",
    propagation: str = "soft",
    mask_resolution: str = "full",
    appearance: str | None = None,
    threads: int | None = None,
    bgr: bool = False,
    fps: float | None = None,
    max_frames: int | None = None,
    policy: str | None = None,
    transport: str | None = None,
    pace: bool | None = False,
    sinks: Sequence[Sink] = (),
    progress: Progress = "off",
    threaded: bool = True,
    palette: np.ndarray | None = None,
) -> Tracking:
    """Segment ``source`` from a first-frame prompt; iterate the returned `Tracking` for `Result` objects, or
    call its ``run()``.

    ``source``: a video file, a folder of frames, a webcam index or device, an rtsp/rtmp/http URL (what the CLI
    takes), a `FrameSource`, frames (a T×H×W×3 uint8 array or an iterable of H×W×3 arrays, BGR with
    ``bgr=True``; results' images and plots then come back in BGR too), or None: the shipped sample clip (and
    its first mask when no prompt is given). Prompt, exactly one kind: ``mask`` (an H×W id array, a PNG path,
    or a function of the first `Frame`), ``boxes`` [(x1, y1, x2, y2), ...] (one object each; a single box
    alone, an N×4 array, float coordinates and "x1,y1,x2,y2" text are accepted; ``box_format="xywh"`` takes
    (x, y, width, height) instead) and/or ``points`` [(x, y) or (x, y, positive), ...] or "x,y[,+|-]" (clicks
    inside a box refine it; the rest make one more object); with none and ``serve``, boxes are drawn in the
    browser on the first frame.

    Outputs, checked before the model loads (``exist_ok`` lets a folder holding results be reused, its old PNGs
    removed): ``masks`` a folder of palette PNGs, ``overlay`` an H.264 MP4 (True: the default place,
    ``rtvos_out/<source name>/``), ``jsonl`` a per-frame log, ``mask_video`` the masks as an MP4
    (``mask_video_mode`` "color" or "alpha"), ``show`` a window, ``serve`` a live view "HOST:PORT" (":0": any
    free port); ``sinks`` adds your own. ``names`` renames outputs in errors (the CLI's flags); ``say`` prints
    the run's messages (browser instructions, the model, what was kept on a failure); else they are logged.

    ``model``: "default", a name `rtvos.models.model_names()` lists, a checkpoint path, a loaded model or a
    ready `Segmenter` (one run at a time: a second concurrent run on it raises RuntimeError). ``appearance``:
    "grid" (the causal colour model fused with the propagated scores), "none", or None: grid wherever it
    applies. ``threads``: torch CPU threads. ``pace``: hand a file's frames out at its frame rate, as a camera
    would, instead of as fast as they decode (None: when a person watches, ``show`` or ``serve``); live
    sources are real time anyway. ``palette`` (256×3) colours the PNGs (default: the mask PNG's, else DAVIS's).
    Misuse (a bad prompt, a missing file, an output that cannot be written) raises `InputError` here, before
    the model loads.
    """
    speak: Say = say or (lambda msg: log.info("rtvos: %s", msg))
    if source is None:
        from .data.sample import sample_clip_paths

        source, sample_mask = sample_clip_paths()
        if mask is None and boxes is None and points is None:
            mask = sample_mask
        speak(f"no source given, using the shipped sample clip {source}")
    address = None if serve is None else parse_serve(serve)
    first, own_palette = given_mask(mask, boxes, points, box_format=box_format, optional=address is not None,
                                     sized_first=True, names=names)
    palette = own_palette if palette is None else np.asarray(palette, dtype=np.uint8)
    config = PipelineConfig(max_frames=max_frames, progress=progress, threaded=threaded)
    if show:
        WindowSink.check_display()
    src = as_source(source, bgr=bgr, fps=fps, policy=policy, transport=transport)
    view: Any = None
    try:
        size_hw = tuple(src.size)
        named = f"mask {mask}" if isinstance(mask, (str, os.PathLike)) else "mask"
        if size_hw[0] > 0:  # everything that can be checked against the frame size is, before the model loads
            if isinstance(first, np.ndarray):
                check_mask_size(first, size_hw, named, str(src.name))
            check_prompts(boxes, points, box_format, size_hw)  # type: ignore[arg-type]
        if isinstance(first, np.ndarray) and not first.any():  # would run to the end with empty output
            raise InputError(f"first {named} has no object: every pixel is 0 (background)")
        folder = Path(DEFAULT_OUT) / safe_name(str(src.name))
        masks_dir = _out_path(masks, folder)
        outs = Outputs(video=_out_path(overlay, (masks_dir or folder) / "overlay.mp4"), masks=masks_dir,
                       jsonl=None if jsonl is None else Path(jsonl),
                       mask_video=None if mask_video is None else Path(mask_video), mask_video_mode=mask_video_mode,
                       show=show, serve=address)
        inputs = {f"the mask {mask}": Path(mask)} if isinstance(mask, (str, os.PathLike)) else {}
        if isinstance(source, (str, os.PathLike)) and Path(source).exists():
            inputs[f"the input {source}"] = Path(source)
        check_output_paths(outs, exist_ok=exist_ok, inputs=inputs, labels=names)
        seg = build_segmenter(model, size=size, device=device, backend=backend, precision=precision,
                         propagation=propagation, mask_resolution=mask_resolution, appearance=appearance,
                         threads=threads, say=say)
        model_line = _model_line(seg, backend, precision)
        if progress != "off":
            speak(model_line)
        if outs.masks is not None:  # only now, with every check passed and the model loaded
            remove_previous_masks(outs.masks)
        if address is not None:
            from .web import LiveView

            view = LiveView(*address)
            view.start()
            speak(view.describe())
        all_sinks = [*build_sinks(outs, view, f"rtvos: {src.name}"), *sinks]
        if first is None:
            first = _from_browser(view, speak)
        if pace is None:
            pace = show or address is not None
        if pace:
            src = paced(src)
    except BaseException:
        if view is not None:
            view.close()
        src.close()
        raise
    pipe = Pipeline(src, seg, all_sinks, first, palette=palette, config=config)
    if view is not None:
        view.on_reanchor = lambda boxes: pipe.reanchor(
            lambda f: prompts_to_mask(f.image, [box_from(b, "xyxy") for b in boxes]))
    return Tracking(pipe, bgr=bgr, view=view, say=say, model_line=model_line)
