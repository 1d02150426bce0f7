"""Live view in the browser: the overlay as MJPEG, fps/latency, and box drags to pick and re-anchor objects.

One stream's view is a `ViewChannel`; `LiveView` serves one channel on its own server (``webcam``, ``stream``,
``segment --serve``) and `LiveHub` many, one per stream, inside the ``rtvos serve`` API. Both are FastAPI
routes on the one server stack of `rtvos.server` (uvicorn on a thread; loopback by default, Host/Origin checks,
JSON-only writes and the body limit are its `~rtvos.server.Guard` middleware).

The segmentation loop never waits for a browser: :meth:`ViewChannel.publish` only swaps in the newest frame and
wakes the clients; each ``stream.mjpg`` client (a coroutine) takes the newest frame when it is ready to send
(older ones are skipped, never queued), so a slow client only slows itself. A frame is JPEG-encoded at most
once, lazily, by the first client that needs it (on a worker thread), so with no browser attached publishing
costs one copy.

Routes of one view (under ``/live/<stream id>/`` in ``rtvos serve``): ``/`` (the page, package data
``rtvos/static/live.html``), ``stream.mjpg`` (multipart/x-mixed-replace), ``select.jpg`` (the still frame given
to :meth:`LiveView.request_box`), ``stats.json`` (`ViewStats`), ``POST box`` and ``POST reanchor``.

Boxes are ``x1,y1,x2,y2`` in image pixels, the end exclusive (x2 = x1 + width), as everywhere in rtvos:
``{"boxes": [[x1, y1, x2, y2], ...]}``, one box per object in object-id order; the reply is
``{"ok": true, "boxes": [[x1, y1, x2, y2], ...]}`` and :meth:`LiveView.wait_boxes` returns the same tuples.
``box`` answers a :meth:`LiveView.request_box`; ``reanchor`` hands boxes drawn on the streamed frame to
:attr:`LiveView.on_reanchor` (409 when the run set none).
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations, whose types are
# imported inside the functions that build the routes (the server stack loads only when a view starts).

import asyncio
import collections
import functools
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .io.base import InputError
from .io.overlay import DISPLAY_COLOURS
from .io.prompt import MAX_OBJECTS, box_from
from .server import is_loopback, url_for

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

__all__ = ["LiveHub", "LiveView", "ViewChannel", "create_view_app", "view_router"]

log = logging.getLogger("rtvos.web")

#: A box as the live view takes and returns it: x1, y1, x2, y2 (end exclusive).
Box = tuple[int, int, int, int]

_BOUNDARY = "rtvosframe"
_KEEPALIVE_S = 10.0  # an idle stream re-sends its frame this often, which also notices dead clients
# Room for every box the CLI accepts, each as a pretty-printed [x1, y1, x2, y2] of 5-digit values (about 50
# bytes), with slack; anything larger is refused (413) before it is read.
MAX_BODY = 256 + 80 * MAX_OBJECTS


class ViewChannel:
    """One stream's live view: the newest frame and stats, the first-box selection and re-anchoring.

    Thread-safe; `publish` never blocks on a client. :attr:`watchers` counts connected MJPEG clients, so a
    producer can skip drawing overlays nobody sees (`rtvos.io.sinks.LiveViewSink` does).
    """

    def __init__(self, jpeg_quality: int = 80) -> None:
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.jpeg_quality = int(jpeg_quality)
        self._cond = threading.Condition()  # guards everything below; notified on publish/box/close
        self._closed = False
        self._ended = False
        self._seq = 0  # frames published so far; the id of the newest frame
        self._image: np.ndarray | None = None
        self._stats: dict[str, Any] = {}
        self._publish_times: collections.deque[float] = collections.deque(maxlen=32)
        self._jpeg_seq = 0  # which frame _jpeg holds
        self._jpeg = b""
        self._encode_lock = threading.Lock()  # one encode at a time; the others then reuse it
        self._selection = 0  # id of the latest request_box
        self._select_jpeg: bytes | None = None
        self._select_size: tuple[int, int] | None = None  # (H, W)
        self._boxes: list[Box] | None = None  # posted for the current selection, not yet taken by wait_boxes
        self._wakers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.on_reanchor: Callable[[list[Box]], None] | None = None

    # -- producer side -----------------------------------------------------------------------------------------
    @property
    def watchers(self) -> int:
        """MJPEG clients connected now."""
        with self._cond:
            return len(self._wakers)

    def publish(self, image_rgb: np.ndarray, stats: dict[str, Any] | None = None) -> None:
        """Make ``image_rgb`` (H×W×3 uint8) the newest frame; copies it, never waits for clients."""
        _check_image(image_rgb)
        image = image_rgb.copy()  # callers reuse their buffers (overlay(out=...))
        with self._cond:
            if self._closed:
                return
            self._image = image
            self._stats = dict(stats or {})
            self._seq += 1
            self._publish_times.append(time.monotonic())
            self._wake()

    def publish_stats(self, stats: dict[str, Any]) -> None:
        """New stats without a frame (no client watches the picture: nothing to draw or copy)."""
        with self._cond:
            self._stats = dict(stats)
            self._publish_times.append(time.monotonic())

    def finish(self) -> None:
        """The run ended: the page says so and keeps showing the last frame; the view still answers."""
        with self._cond:
            self._ended = True
            self._wake()

    def close(self) -> None:
        """Ends every MJPEG response and unblocks :meth:`wait_boxes` (returns None); idempotent."""
        with self._cond:
            self._closed = True
            self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:  # with self._cond held
        self._cond.notify_all()
        for loop, event in self._wakers:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that client's loop has closed
                pass

    def request_box(self, image_rgb: np.ndarray) -> None:
        """Show ``image_rgb`` on the page as a still frame to drag boxes on; forgets any earlier boxes."""
        _check_image(image_rgb)
        jpeg = self._encode(image_rgb)
        with self._cond:
            self._select_jpeg = jpeg
            self._select_size = image_rgb.shape[:2]
            self._selection += 1
            self._boxes = None
            self._cond.notify_all()

    def wait_boxes(self, timeout: float | None = None) -> list[Box] | None:
        """Block until the boxes for the requested frame are posted (the user pressed start); returns them as
        (x1, y1, x2, y2) in the order drawn (object ids 1, 2, ...), or None on timeout or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._boxes is None and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            boxes, self._boxes = self._boxes, None
            return boxes

    # -- server side -------------------------------------------------------------------------------------------
    def stats_doc(self) -> dict[str, Any]:
        """What ``stats.json`` answers (`ViewStats`), JSON-safe (NaN/inf → null, numpy → Python)."""
        with self._cond:
            times = self._publish_times
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            # A stalled producer should not keep showing its last rate.
            if times and time.monotonic() - times[-1] > 2.0:
                fps = 0.0
            h, w = self._image.shape[:2] if self._image is not None else (0, 0)
            doc = {
                "state": self._state(),
                "frames": self._seq,
                "publish_fps": round(fps, 2),
                "width": w,
                "height": h,
                "selection": self._selection if self._select_jpeg is not None else 0,
                "reanchor": self.on_reanchor is not None and self._image is not None and not self._ended,
                "stats": self._stats,
            }
        return json.loads(json.dumps(_finite(doc), default=_json_default, allow_nan=False))

    def _state(self) -> str:
        """waiting (nothing shown yet), selecting, segmenting, ended (the run is over, the last frame stays)
        or closed. A frame on screen is never "waiting": stats without a frame count too."""
        if self._closed:
            return "closed"
        if self._select_jpeg is not None:  # a box was requested and none posted yet
            return "selecting"
        if self._ended:
            return "ended"
        return "segmenting" if self._seq or self._stats else "waiting"

    async def mjpeg(self, client: str = "") -> AsyncIterator[bytes]:
        """The multipart body of ``stream.mjpg``: the newest frame whenever one is newer than the last sent."""
        from starlette.concurrency import run_in_threadpool

        waker = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            self._wakers.add(waker)
        last, normal_end = 0, False
        try:
            yield f"--{_BOUNDARY}\r\n".encode()
            while True:
                with self._cond:
                    closed, seq, image = self._closed, self._seq, self._image
                    if not closed and seq <= last:
                        waker[1].clear()  # cleared under the lock: a publish after this sets it again
                if closed:
                    normal_end = True
                    return
                if seq <= last:
                    try:
                        await asyncio.wait_for(waker[1].wait(), _KEEPALIVE_S)
                        continue
                    except asyncio.TimeoutError:
                        if image is None:
                            continue
                        last = seq - 1  # idle: send the current frame again
                        continue
                assert image is not None
                jpeg = await run_in_threadpool(self._jpeg_of, seq, image)
                last = seq
                # The closing boundary goes right after the part, so the browser shows it without waiting
                # for the next frame.
                head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                yield head + jpeg + f"\r\n--{_BOUNDARY}\r\n".encode()
        finally:
            with self._cond:
                self._wakers.discard(waker)
            if not normal_end:
                log.debug("live view stream client %s went away", client)

    def _jpeg_of(self, seq: int, image: np.ndarray) -> bytes:
        with self._encode_lock:
            if self._jpeg_seq != seq:
                self._jpeg_seq, self._jpeg = seq, self._encode(image)
            return self._jpeg

    def selection_jpeg(self) -> bytes | None:
        with self._cond:
            return self._select_jpeg

    def post_boxes(self, boxes: list[Box]) -> list[Box]:
        """Validate and deliver the boxes from the page; raises InputError (→ 400) or LookupError (→ 409)."""
        with self._cond:
            if self._select_jpeg is None or self._select_size is None:
                raise LookupError("no box was requested: wait for the selection frame")
            checked = _check_boxes(boxes, self._select_size)
            self._boxes = checked
            self._select_jpeg = None  # selection over: the page goes back to the stream
            self._cond.notify_all()
            return checked

    def post_reanchor(self, boxes: list[Box]) -> list[Box]:
        """Validate boxes drawn on the streamed frame and hand them to :attr:`on_reanchor`; raises InputError
        (→ 400) or LookupError (→ 409: no callback, or nothing streamed yet to draw on)."""
        with self._cond:
            callback = self.on_reanchor
            if callback is None:
                raise LookupError("re-anchoring is not available for this run")
            if self._image is None:
                raise LookupError("no frame is being streamed yet: nothing to re-anchor on")
            if self._ended:
                raise LookupError("the run has ended: nothing to re-anchor")
            size = self._image.shape[:2]
        checked = _check_boxes(boxes, size)
        callback(list(checked))  # outside the lock: the callback may take its own locks
        return checked

    def _encode(self, image_rgb: np.ndarray) -> bytes:
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for a {image_rgb.shape} frame")
        return buf.tobytes()


class LiveView:
    """The browser view of one stream on its own server; see the module docstring for the routes.

    Typical use: ``url = view.start()``; per frame ``view.publish(overlay_rgb, {"fps": ..., "latency_ms": ...})``;
    for an interactive first mask ``view.request_box(frame)`` then ``boxes = view.wait_boxes()`` (x1, y1, x2, y2).
    Set :attr:`on_reanchor` to accept boxes drawn on the stream (``POST /reanchor``); it is called from a
    server thread with the validated list of boxes and should only hand them over (e.g. ``Pipeline.reanchor``).
    After the run, :meth:`finish` then :meth:`wait_closed` keep the page up until :meth:`close` (or Ctrl-C).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, jpeg_quality: int = 80) -> None:
        if not 0 <= int(port) <= 65535:
            raise InputError(f"port must be in 0..65535, got {port}")
        self.channel = ViewChannel(jpeg_quality)
        self.host = host
        self.port = int(port)
        self._server: Any = None
        self._closed = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving on a daemon thread; returns the page URL (port 0 picks a free port)."""
        from .server import HttpServer

        if self._server is not None:
            raise RuntimeError("LiveView already started")
        if self._closed.is_set():
            raise RuntimeError("LiveView is closed")
        app = create_view_app(self.channel, loopback=self.is_loopback)
        self._server = HttpServer(app, self.host, self.port, name="rtvos-liveview", what="serve the live view")
        self.port = self._server.port
        log.info("live view at %s", self.url)
        return self.url

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)

    def describe(self) -> str:
        """Where the view is served, and a warning when it is reachable beyond this machine."""
        bound = f"{self.host or '0.0.0.0'}:{self.port}"
        if self.is_loopback:
            return f"live view at {self.url}"
        return (f"live view bound to {bound} (open {self.url} here); WARNING: it is reachable from the network "
                "and accepts a box from anyone who can reach it")

    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    def close(self) -> None:
        """Stop the server; ends MJPEG clients' streams and unblocks :meth:`wait_boxes` (returns None)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.channel.close()
        if self._server is not None:
            self._server.close()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` (from another thread) or ``timeout``; True once closed. What keeps the page
        up after a run's end; Ctrl-C interrupts it."""
        return self._closed.wait(timeout)

    def __enter__(self) -> "LiveView":
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the channel's interface -------------------------------------------------------------------------------
    @property
    def on_reanchor(self) -> Callable[[list[Box]], None] | None:
        return self.channel.on_reanchor

    @on_reanchor.setter
    def on_reanchor(self, callback: Callable[[list[Box]], None] | None) -> None:
        self.channel.on_reanchor = callback

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def watchers(self) -> int:
        return self.channel.watchers

    def publish(self, image_rgb: np.ndarray, stats: dict[str, Any] | None = None) -> None:
        self.channel.publish(image_rgb, stats)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self.channel.publish_stats(stats)

    def finish(self) -> None:
        self.channel.finish()

    def request_box(self, image_rgb: np.ndarray) -> None:
        self.channel.request_box(image_rgb)

    def wait_boxes(self, timeout: float | None = None) -> list[Box] | None:
        return self.channel.wait_boxes(timeout)


class LiveHub:
    """One `ViewChannel` per stream of ``rtvos serve``; served under ``/live/`` by the service's own server."""

    def __init__(self, jpeg_quality: int = 80) -> None:
        self.jpeg_quality = jpeg_quality
        self._channels: dict[str, ViewChannel] = {}
        self._lock = threading.Lock()

    def open(self, stream_id: str) -> ViewChannel:
        """A fresh channel for a stream being added (one re-added after its end replaces the old one, whose
        clients' MJPEG responses end; the page reconnects)."""
        ch = ViewChannel(self.jpeg_quality)
        with self._lock:
            old, self._channels[stream_id] = self._channels.get(stream_id), ch
        if old is not None:
            old.close()
        return ch

    def get(self, stream_id: str) -> ViewChannel | None:
        with self._lock:
            return self._channels.get(stream_id)

    def remove(self, stream_id: str) -> None:
        with self._lock:
            ch = self._channels.pop(stream_id, None)
        if ch is not None:
            ch.close()

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()


# -- the HTTP side -----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _models() -> tuple[Any, Any, Any]:
    """The pydantic models of the JSON endpoints (built on first use: pydantic is imported with the server)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictInt

    class BoxesIn(BaseModel):
        """Boxes posted by the page: one per object, x1,y1,x2,y2 in image pixels (end exclusive)."""

        model_config = ConfigDict(extra="forbid")
        boxes: list[tuple[StrictInt, StrictInt, StrictInt, StrictInt]] = Field(
            description="[[x1, y1, x2, y2], ...]: image pixels, x2 = x1 + width; object ids 1, 2, ... in order")

    class BoxesOut(BaseModel):
        ok: bool = True
        boxes: list[tuple[int, int, int, int]] = Field(description="the accepted boxes, x1,y1,x2,y2")

    class ViewStats(BaseModel):
        state: str = Field(description="waiting, selecting, segmenting, ended or closed")
        frames: int = Field(description="frames published so far")
        publish_fps: float
        width: int
        height: int
        selection: int = Field(description="id of the pending box request (select.jpg), 0 when none")
        reanchor: bool = Field(description="whether POST reanchor is available now")
        stats: dict[str, Any] = Field(description="the producer's own figures: fps, latency_ms, frame, ...")

    return BoxesIn, BoxesOut, ViewStats


def view_router(channel_of: Callable[..., ViewChannel]) -> "APIRouter":
    """The routes of one view; ``channel_of`` is a FastAPI dependency giving the channel (a fixed one, or the
    stream named in the path)."""
    from fastapi import APIRouter, Depends, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

    from .server import error_body

    boxes_in, boxes_out, view_stats = _models()
    router = APIRouter()
    Channel = Depends(channel_of)  # noqa: N806 (a dependency, used as a default)

    def error(status: int, message: object) -> Response:
        return Response(error_body(message), status_code=status, media_type="application/json")

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    @router.get("/index.html", response_class=HTMLResponse, include_in_schema=False)
    def index(channel: ViewChannel = Channel) -> Response:
        return HTMLResponse(page(), headers={"Cache-Control": "no-store"})

    @router.get("/stream.mjpg", response_class=StreamingResponse, summary="the overlay as MJPEG")
    def stream(request: Request, channel: ViewChannel = Channel) -> Response:
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        return StreamingResponse(channel.mjpeg(client), media_type=f"multipart/x-mixed-replace; boundary={_BOUNDARY}",
                                 headers={"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"})

    @router.get("/stats.json", response_model=view_stats, summary="state, frame count, rates and the producer's stats")
    def stats(channel: ViewChannel = Channel) -> Response:
        return JSONResponse(channel.stats_doc(), headers={"Cache-Control": "no-store"})

    @router.get("/select.jpg", summary="the still frame to drag the first boxes on")
    def select(channel: ViewChannel = Channel) -> Response:
        jpeg = channel.selection_jpeg()
        if jpeg is None:
            return error(404, "no selection frame requested")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    body_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": boxes_in.model_json_schema()}}}}

    async def post(request: Request, channel: ViewChannel, deliver: Callable[[ViewChannel, list[Box]], list[Box]]) -> Response:
        body = await request.body()
        try:
            boxes = parse_boxes(body)
            boxes = deliver(channel, boxes)
        except InputError as e:
            return error(400, e)
        except LookupError as e:
            return error(409, e)
        except Exception as e:  # a failing on_reanchor callback: say so instead of dropping the connection
            log.warning("live view: re-anchoring failed", exc_info=True)
            return error(500, f"re-anchoring failed: {e}")
        return JSONResponse(boxes_out(boxes=boxes).model_dump())

    @router.post("/box", response_model=boxes_out, openapi_extra=body_doc, summary="the first boxes, x1,y1,x2,y2")
    async def box(request: Request, channel: ViewChannel = Channel) -> Response:
        return await post(request, channel, ViewChannel.post_boxes)

    @router.post("/reanchor", response_model=boxes_out, openapi_extra=body_doc,
                 summary="re-anchor on boxes drawn on the streamed frame, x1,y1,x2,y2")
    async def reanchor_route(request: Request, channel: ViewChannel = Channel) -> Response:
        return await post(request, channel, ViewChannel.post_reanchor)

    return router


def create_view_app(channel: ViewChannel, *, loopback: bool = True) -> "FastAPI":
    """The app of a `LiveView`: one channel's routes at the root, ``/healthz``, behind the `Guard`."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from . import __version__
    from .server import Guard, install_error_handlers

    app = FastAPI(title="rtvos live view", version=__version__, docs_url="/docs", redoc_url=None)
    install_error_handlers(app)
    app.include_router(view_router(lambda: channel))

    @app.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
    def healthz() -> str:
        return "ok\n"

    app.add_middleware(Guard, loopback=loopback, max_body=MAX_BODY)
    return app


def add_hub_routes(app: "FastAPI", hub: LiveHub) -> None:
    """``/live/`` (every stream's view on one page) and ``/live/<id>/...`` (one stream's view) on ``app``."""
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, RedirectResponse

    def channel_of(stream_id: str) -> ViewChannel:
        ch = hub.get(stream_id)
        if ch is None:
            raise HTTPException(404, f"no live view for stream {stream_id!r}")
        return ch

    @app.get("/live", include_in_schema=False)
    def live_root() -> RedirectResponse:
        return RedirectResponse("/live/")

    @app.get("/live/", response_class=HTMLResponse, summary="every stream's live view on one page")
    def streams_page() -> HTMLResponse:
        return HTMLResponse(_static("streams.html"), headers={"Cache-Control": "no-store"})

    @app.get("/live/{stream_id}", include_in_schema=False)
    def live_stream_root(stream_id: str) -> RedirectResponse:
        return RedirectResponse(f"/live/{stream_id}/")

    app.include_router(view_router(channel_of), prefix="/live/{stream_id}", tags=["live view"])


@functools.lru_cache(maxsize=4)
def _static(name: str) -> str:
    return resources.files("rtvos").joinpath(f"static/{name}").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def page() -> bytes:
    """The page (package data ``rtvos/static/live.html``) with the overlay's object colours filled in, so a box
    drawn for object k has the colour object k gets in the stream."""
    colours = json.dumps(["#%02x%02x%02x" % c for c in DISPLAY_COLOURS])
    html = _static("live.html")
    if _COLOURS_SLOT not in html:
        raise RuntimeError(f"rtvos/static/live.html lacks its {_COLOURS_SLOT} slot")
    return html.replace(_COLOURS_SLOT, colours).encode()


_COLOURS_SLOT = "__RTVOS_DISPLAY_COLOURS__"


def _check_boxes(boxes: list[Box], frame_size: tuple[int, int]) -> list[Box]:
    """Each box checked against ``frame_size`` (H, W); an error names the box by its number (1, 2, ...)."""
    if not boxes:
        raise InputError("no boxes: drag at least one box around an object")
    if len(boxes) > MAX_OBJECTS:
        raise InputError(f"at most {MAX_OBJECTS} boxes, got {len(boxes)}")
    checked = []
    for i, box in enumerate(boxes, start=1):
        try:
            box_from(box, "xyxy", frame_size)
        except InputError as e:
            raise InputError(f"box {i} of {len(boxes)}: {e}") from None
        checked.append(tuple(int(v) for v in box))
    return checked  # type: ignore[return-value]


def parse_boxes(body: bytes) -> list[Box]:
    """``{"boxes": [[x1, y1, x2, y2], ...]}`` → boxes, validated by the `BoxesIn` model; InputError (one line)
    for anything else, bodies that are not JSON included."""
    from pydantic import ValidationError

    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: b"[" * 4000
        raise InputError(f"boxes are not valid JSON: {body[:200]!r}") from None
    form = '{"boxes": [[x1, y1, x2, y2], ...]}'
    if not isinstance(doc, dict) or "boxes" not in doc:
        raise InputError(f"boxes must be a JSON object {form}; got {body[:200]!r}")
    items = doc["boxes"]
    if not isinstance(items, list):
        raise InputError(f'"boxes" must be a list of [x1, y1, x2, y2]; got {json.dumps(items)[:200]}')
    if len(items) > MAX_OBJECTS:
        raise InputError(f"at most {MAX_OBJECTS} boxes, got {len(items)}")
    try:
        req = _models()[0].model_validate(doc)
    except ValidationError as err:
        loc = err.errors()[0].get("loc", ())
        if len(loc) >= 2 and loc[0] == "boxes" and isinstance(loc[1], int):
            i = loc[1]
            raise InputError(f"box {i + 1} of {len(items)} must be [x1, y1, x2, y2] (4 integers); "
                             f"got {json.dumps(items[i])[:200]}") from None
        raise InputError(f"boxes must be a JSON object {form}; got {body[:200]!r}") from None
    return [tuple(b) for b in req.boxes]  # type: ignore[attr-defined]


def _check_image(image: object) -> None:
    if not (
        isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    ):
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"live view frames must be HxWx3 uint8 RGB, got {got}")


def _finite(o: Any) -> Any:
    """NaN/inf → None: the browser's JSON.parse rejects them and the page would stop updating."""
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
