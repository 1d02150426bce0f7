"""Live view in the browser: the overlay as MJPEG, fps/latency, and box drags to pick and re-anchor objects.

A stdlib ``ThreadingHTTPServer`` in a daemon thread, so there is no new
dependency and the segmentation loop never waits for a browser:
:meth:`LiveView.publish` only swaps in the newest frame and notifies;
each ``/stream.mjpg`` client thread wakes on a ``Condition``, takes the
newest frame (older ones are skipped, never queued) and sends it. A frame
is JPEG-encoded at most once, lazily, by the first client that needs it,
so with no browser attached publishing costs one copy.

Routes: ``/`` (self-contained page, no CDN: ``rtvos/static/live.html``), ``/stream.mjpg``
(multipart/x-mixed-replace), ``/select.jpg`` (the still frame given to
:meth:`LiveView.request_box`), ``/stats.json``, ``POST /box`` (JSON
``{"boxes": [{"x", "y", "w", "h"}, ...]}`` in image pixels, one box per
object; a single ``{"x", "y", "w", "h"}`` object is still accepted),
``POST /reanchor`` (same body, boxes on the streamed frame; handed to
:attr:`LiveView.on_reanchor`) and ``/healthz``.

On the selection still the page lets the user drag several boxes (each
numbered and in its own colour, "undo last", then "start" or Enter). While
streaming, "re-anchor" freezes the shown frame in the page, the user drags
boxes on it and "apply" posts them to ``/reanchor`` (only offered when the
run set ``on_reanchor``).

``/stats.json`` is ``{"state", "frames", "publish_fps", "width", "height",
"selection", "reanchor", "stats"}`` where ``stats`` is the dict last given
to ``publish`` and ``reanchor`` says whether re-anchoring is available; the
page shows its ``fps`` (else the measured publish rate) and ``latency_ms``,
and any other numeric keys in small print.

Bound to 127.0.0.1 unless told otherwise: the page accepts a box from
anyone who can reach it.
"""

from __future__ import annotations

import collections
import errno
import functools
import http.server
import json
import logging
import math
import socket
import socketserver
import sys
import threading
import time
from importlib import resources
from types import TracebackType
from typing import Any, Callable

import cv2
import numpy as np

from .io.base import InputError
from .io.overlay import DISPLAY_COLOURS
from .io.prompt import MAX_OBJECTS, check_box

__all__ = ["LiveView"]

log = logging.getLogger("rtvos.web")

Box = tuple[int, int, int, int]

_BOUNDARY = "rtvosframe"
_KEEPALIVE_S = 10.0  # an idle stream re-sends its frame this often, which also notices dead clients
_MAX_BOXES = MAX_OBJECTS  # object ids 1..254, as many as the CLI's --box takes
# Room for every box the CLI accepts, each as a pretty-printed {"x": .., "y": .., "w": .., "h": ..} of 5-digit
# values (about 50 bytes), with slack; anything larger is refused (413) before it is read.
_MAX_BODY = 256 + 80 * _MAX_BOXES
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)


class LiveView:
    """The browser view of one stream; see the module docstring for the routes.

    Typical use: ``url = view.start()``; per frame ``view.publish(overlay_rgb, {"fps": ..., "latency_ms": ...})``;
    for an interactive first mask ``view.request_box(frame)`` then ``boxes = view.wait_boxes()``.
    Set :attr:`on_reanchor` to accept boxes drawn on the stream (``POST /reanchor``); it is called from a
    server thread with the validated list of boxes and should only hand them over (e.g. ``Pipeline.reanchor``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, jpeg_quality: int = 80) -> None:
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if not 0 <= int(port) <= 65535:
            raise InputError(f"port must be in 0..65535, got {port}")
        self.host = host
        self.port = int(port)
        self.jpeg_quality = int(jpeg_quality)
        self._cond = threading.Condition()  # guards everything below; notified on publish/box/close
        self._closed = False
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
        self.on_reanchor: Callable[[list[Box]], None] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving in a daemon thread; returns the page URL (port 0 picks a free port)."""
        if self._server is not None:
            raise RuntimeError("LiveView already started")
        if self._closed:
            raise RuntimeError("LiveView is closed")
        try:
            server = _Server((self.host, self.port), _Handler, self)
        except OSError as e:
            reason = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise InputError(f"cannot serve the live view on {self.host}:{self.port}: {reason}") from None
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="rtvos-liveview", daemon=True
        )
        self._thread.start()
        log.info("live view at %s", self.url)
        return self.url

    @property
    def is_loopback(self) -> bool:
        import ipaddress

        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # "" or a host name: treat as reachable from the network
            return False

    def describe(self) -> str:
        """Where the view is served, and a warning when it is reachable beyond this machine."""
        bound = f"{self.host or '0.0.0.0'}:{self.port}"
        if self.is_loopback:
            return f"live view at {self.url}"
        return (f"live view bound to {bound} (open {self.url} here); WARNING: it is reachable from the network "
                "and accepts a box from anyone who can reach it")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop the server; unblocks MJPEG clients (their stream ends) and :meth:`wait_boxes` (returns None)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LiveView:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- producer side -----------------------------------------------------------------------------------------
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
            self._cond.notify_all()

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
        """Block until the boxes for the requested frame are posted (the user pressed start); returns them in
        the order drawn (object ids 1, 2, ...), or None on timeout or close."""
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
    def stats_json(self) -> bytes:
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
                "reanchor": self.on_reanchor is not None and self._image is not None,
                "stats": self._stats,
            }
            return json.dumps(_finite(doc), default=_json_default, allow_nan=False).encode()

    def _state(self) -> str:
        if self._closed:
            return "closed"
        if self._select_jpeg is not None:  # a box was requested and none posted yet
            return "selecting"
        return "segmenting" if self._seq else "waiting"

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest frame's (seq, JPEG) once seq > ``after``; the current one again on timeout; None on close."""
        with self._cond:
            end = time.monotonic() + timeout
            while not self._closed and self._seq <= after:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed or self._image is None:
                return None if self._closed else (after, b"")
            seq, image = self._seq, self._image
        with self._encode_lock:
            if self._jpeg_seq < seq:  # not encoded yet (another client may have done a newer one)
                self._jpeg_seq, self._jpeg = seq, self._encode(image)
            return self._jpeg_seq, self._jpeg

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

    @property
    def closed(self) -> bool:
        return self._closed


@functools.lru_cache(maxsize=1)
def page() -> bytes:
    """The page (package data ``rtvos/static/live.html``) with the overlay's object colours filled in, so a box
    drawn for object k has the colour object k gets in the stream."""
    colours = json.dumps(["#%02x%02x%02x" % c for c in DISPLAY_COLOURS])
    html = resources.files("rtvos").joinpath("static/live.html").read_text(encoding="utf-8")
    if _COLOURS_SLOT not in html:
        raise RuntimeError(f"rtvos/static/live.html lacks its {_COLOURS_SLOT} slot")
    return html.replace(_COLOURS_SLOT, colours).encode()


_COLOURS_SLOT = "__RTVOS_DISPLAY_COLOURS__"


def _check_boxes(boxes: list[Box], frame_size: tuple[int, int]) -> list[Box]:
    """Each box checked against ``frame_size`` (H, W); an error names the box by its number (1, 2, ...)."""
    if not boxes:
        raise InputError("no boxes: drag at least one box around an object")
    if len(boxes) > _MAX_BOXES:
        raise InputError(f"at most {_MAX_BOXES} boxes, got {len(boxes)}")
    checked = []
    for i, box in enumerate(boxes, start=1):
        try:
            checked.append(check_box(box, frame_size))
        except InputError as e:
            raise InputError(f"box {i} of {len(boxes)}: {e}") from None
    return checked


def _parse_boxes(body: bytes) -> list[Box]:
    """``{"boxes": [{x, y, w, h}, ...]}`` or one ``{x, y, w, h}``; raises InputError, or JSONDecodeError,
    UnicodeDecodeError and RecursionError for bodies that are not JSON."""
    doc = json.loads(body)
    keys = ("x", "y", "w", "h")
    if isinstance(doc, dict) and "boxes" in doc:
        items = doc["boxes"]
        if not isinstance(items, list):
            raise InputError(f'"boxes" must be a list of {{x, y, w, h}} objects; got {body[:200]!r}')
        if not items:
            raise InputError("no boxes: drag at least one box around an object")
        for i, item in enumerate(items, start=1):
            if not isinstance(item, dict) or not set(keys) <= item.keys():
                raise InputError(f"box {i} of {len(items)} must be a JSON object with x, y, w, h; "
                                 f"got {json.dumps(item)[:200]}")
    elif isinstance(doc, dict) and set(keys) <= doc.keys():
        items = [doc]
    else:
        raise InputError(f'boxes must be a JSON object {{"boxes": [{{x, y, w, h}}, ...]}} or one box with '
                         f"x, y, w, h; got {body[:200]!r}")
    return [tuple(item[k] for k in keys) for item in items]  # type: ignore[misc]


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


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, view: LiveView) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.view = view
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall for seconds offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _DISCONNECTS):
            log.debug("live view client %s went away: %r", client_address, exc)
        else:
            log.warning("live view: error serving %s", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "rtvos-liveview"
    timeout = 60  # a half-open client cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("live view %s: " + format, self.address_string(), *args)

    def _allowed_hosts(self) -> set[str]:
        view = self.server.view
        port = view.port
        names = {"127.0.0.1", "localhost", "[::1]"}
        if view.host not in ("", "0.0.0.0", "::"):
            names.add(f"[{view.host}]" if ":" in view.host else view.host)
        return {f"{n}:{port}" for n in names}

    def _host_ok(self) -> bool:
        """DNS rebinding: a loopback-bound view answers only requests addressed to itself. A view the user
        bound to the network on purpose cannot know its public names, so it accepts any Host."""
        host = self.headers.get("Host")
        if not self.server.view.is_loopback or host is None:  # browsers always send Host; raw HTTP/1.0 may not
            return True
        if host.lower() in self._allowed_hosts():
            return True
        self._error(421, f"unexpected Host header {self.headers.get('Host')!r}")
        return False

    def _origin_ok(self) -> bool:
        """State-changing requests: a browser's Origin (when sent) must be this view's own."""
        origin = self.headers.get("Origin")
        if origin is None:
            return True  # not a browser cross-site request (curl, scripts)
        host = origin.split("://", 1)[-1].rstrip("/").lower()
        if origin.startswith("http://") and (host in self._allowed_hosts() or (
                not self.server.view.is_loopback and host == (self.headers.get("Host") or "").lower())):
            return True
        self._error(403, f"cross-origin request refused (Origin {origin!r})")
        return False

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        view = self.server.view
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", page())
        elif path == "/stream.mjpg":
            self._stream(view)
        elif path == "/stats.json":
            self._send(200, "application/json", view.stats_json())
        elif path == "/select.jpg":
            jpeg = view.selection_jpeg()
            if jpeg is None:
                self._error(404, "no selection frame requested")
            else:
                self._send(200, "image/jpeg", jpeg)
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._error(404, f"no such page: {path}")

    def do_POST(self) -> None:  # noqa: N802
        if not (self._host_ok() and self._origin_ok()):
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/box", "/reanchor"):
            self._error(404, f"no such page: {path}")
            return
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":  # a "simple" cross-site form/text POST cannot set this type
            self._error(415, f"POST {path} needs Content-Type application/json, got {ctype or 'none'!r}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "Content-Length required")
            return
        if not 0 <= length <= _MAX_BODY:
            self._error(413, f"body too large ({length} bytes, at most {_MAX_BODY})")
            return
        body = self.rfile.read(length)
        view = self.server.view
        try:
            boxes = _parse_boxes(body)
            if path == "/box":
                boxes = view.post_boxes(boxes)
            else:
                boxes = view.post_reanchor(boxes)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: b"[" * 4000
            self._error(400, f"box is not valid JSON: {body[:200]!r}")
        except InputError as e:
            self._error(400, str(e))
        except LookupError as e:
            self._error(409, str(e))
        except Exception as e:  # a failing on_reanchor callback: say so instead of dropping the connection
            log.warning("live view: re-anchoring failed", exc_info=True)
            self._error(500, f"re-anchoring failed: {e}")
        else:
            doc = {"ok": True, "boxes": [list(b) for b in boxes]}
            if path == "/box":
                doc["box"] = list(boxes[0])  # the single-box reply older pages read
            self._send(200, "application/json", json.dumps(doc).encode())

    def _stream(self, view: LiveView) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
        self.send_header("Pragma", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        last = 0
        try:
            self.wfile.write(f"--{_BOUNDARY}\r\n".encode())
            while True:
                got = view.next_jpeg(last, _KEEPALIVE_S)
                if got is None:  # closed: end the multipart body so the client sees a clean end
                    break
                last, jpeg = got
                if not jpeg:
                    continue
                # The closing boundary goes right after the part, so the browser shows it without
                # waiting for the next frame.
                head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(head + jpeg + f"\r\n--{_BOUNDARY}\r\n".encode())
                self.wfile.flush()
        except _DISCONNECTS as e:
            log.debug("live view stream client %s went away: %r", self.client_address, e)

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        except _DISCONNECTS as e:
            log.debug("live view client %s went away: %r", self.client_address, e)

    def _error(self, code: int, message: str) -> None:
        self._send(code, "application/json", json.dumps({"ok": False, "error": message}).encode())
