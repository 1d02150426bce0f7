"""Engines behind `rtvos serve`: where the streams run. `LocalEngine` runs them in this process on one
`rtvos.MultiTracker` (one model, the model on the calling thread); `rtvos.serve.ray_engine.RayEngine` spreads
them over Ray actors. Both take `StreamSpec` objects and answer status as plain dicts (the API's JSON)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..io.base import InputError
from ..io.sinks import JsonlSink, MaskSink, MaskVideoSink, Sink, VideoSink, check_output_folder
from .config import ReanchorRequest, StreamSpec

__all__ = ["Engine", "LocalEngine", "build_sinks", "model_options"]

log = logging.getLogger("rtvos")

#: Called for every frame out: (stream id, capture → model output latency in seconds).
OnFrame = Callable[[str, float], None]


class Engine(Protocol):
    name: str

    def add(self, spec: StreamSpec) -> dict[str, Any]: ...

    def remove(self, stream_id: str) -> dict[str, Any]: ...

    def reanchor(self, stream_id: str, req: ReanchorRequest) -> None: ...

    def status(self, stream_id: str | None = None) -> list[dict[str, Any]]: ...

    def run(self, until_done: bool = False, on_frame: OnFrame | None = None) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


def model_options(model: str = "default", size: int | None = None, backend: str = "auto", device: str = "auto") -> dict[str, Any]:
    """The model settings every engine passes to `MultiTracker` (one definition)."""
    return {"model": model, "size": size, "backend": backend, "device": device}


def build_sinks(spec: StreamSpec) -> list[Sink]:
    """A stream's outputs, as `rtvos segment` writes them: ``out/%05d.png`` (+ ``out/overlay.mp4``), the JSONL
    log, the mask video. An ``out`` folder that already holds results is refused unless ``exist_ok``."""
    sinks: list[Sink] = []
    if spec.out is not None:
        try:
            check_output_folder(spec.out, spec.exist_ok)
        except InputError as err:
            raise InputError(str(err).replace("pass --exist-ok", "set exist_ok: true")) from None
        sinks.append(MaskSink(spec.out))
        if spec.overlay:
            sinks.append(VideoSink(Path(spec.out) / "overlay.mp4"))
    if spec.mask_video is not None:
        sinks.append(MaskVideoSink(spec.mask_video))
    if spec.jsonl is not None:
        sinks.append(JsonlSink(spec.jsonl))
    return sinks


def source_of(spec: StreamSpec) -> str | int:
    s = spec.source
    return int(s) if isinstance(s, str) and s.isdigit() else s


#: The most overlays a second a stream draws for its live view, and only while a browser watches it: the view
#: of N streams must not cost N full-rate overlays and JPEGs.
LIVE_VIEW_FPS = 10.0


class LocalEngine:
    """Every stream in this process, through one model (`rtvos.MultiTracker`); `run` is the model loop.
    ``hub`` (a `rtvos.web.LiveHub`): each stream is also shown in the live view."""

    name = "local"

    def __init__(self, model: Any = "default", *, size: int | None = None, backend: str = "auto",
                 device: str = "auto", hub: Any = None, threads: int | None = None) -> None:
        from ..multi import MultiTracker, StreamStatus

        self.hub = hub
        self._until_done = False
        # threads: intra-op threads per step of the shared pool (None: cores // workers).
        self.multi = MultiTracker(model, size=size, backend=backend, device=device, keep_alive=True,
                                  on_end=self._on_end, threads=threads)
        self.ended: list[StreamStatus] = []

    def add(self, spec: StreamSpec) -> dict[str, Any]:
        if any(s.id == spec.id and s.state in ("starting", "running") for s in self.multi.status()):
            raise InputError(f"stream {spec.id!r} already exists")  # before its output folder is looked at
        sinks = build_sinks(spec)
        if self.hub is not None:  # first: what a person watches gets each frame before the encoders
            from ..io.sinks import LiveViewSink

            view = self.hub.open(spec.id)
            # Boxes dragged on the stream's page (x1,y1,x2,y2, as MultiTracker takes them) re-anchor it.
            view.on_reanchor = lambda boxes, sid=spec.id: self.multi.reanchor(sid, boxes=boxes)
            sinks.insert(0, LiveViewSink(view, max_fps=LIVE_VIEW_FPS, only_watched=True))
        self.multi.add(spec.id, source_of(spec), mask=spec.mask, boxes=spec.all_boxes_xyxy or None,
                       points=spec.points or None, sinks=sinks, max_frames=spec.max_frames, policy=spec.policy,
                       transport=spec.transport, pace=spec.pace)
        return self.status(spec.id)[0]

    def remove(self, stream_id: str) -> dict[str, Any]:
        st = self.multi.remove(stream_id)
        return {**st.to_json(), "restarts": 0}

    def reanchor(self, stream_id: str, req: ReanchorRequest) -> None:
        boxes = [(x, y, x + w, y + h) for x, y, w, h in req.boxes]
        self.multi.reanchor(stream_id, boxes=boxes or None, points=req.points or None)

    def status(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        return [{**s.to_json(), "restarts": 0} for s in self.multi.status(stream_id)]

    def _on_end(self, st: Any) -> None:
        self.ended.append(st)
        if self._until_done and not any(not s.live and s.state in ("starting", "running") for s in self.multi.status()):
            self.multi.stop()  # --until-done: every file stream has ended

    def run(self, until_done: bool = False, on_frame: OnFrame | None = None) -> None:
        """The model loop, on the calling thread, until `stop` (or, with ``until_done``, the last file stream's
        end). Ctrl-C / SIGTERM arrive here as KeyboardInterrupt: every stream's sinks are flushed first."""
        import time

        self._until_done = until_done
        if until_done and not any(not s.live and s.state in ("starting", "running") for s in self.multi.status()):
            return
        gen = iter(self.multi)
        try:
            for sid, r in gen:
                if on_frame is not None:
                    on_frame(sid, max(0.0, time.time() - r.captured_s))
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    def stop(self) -> None:
        self.multi.stop()

    def close(self) -> None:
        self.multi.close()
