"""The one HTTP stack of rtvos: Starlette/FastAPI apps served by uvicorn on a background thread.

Both the live view (`rtvos.web`, behind ``webcam``, ``stream`` and ``segment --serve``) and the service API
(`rtvos.serve.app`, behind ``rtvos serve``) run on it, so their rules are written once, here:

* loopback by default; a loopback-bound server answers only requests whose Host names a loopback address
  (421 otherwise: DNS rebinding cannot reach it through a hostile name);
* writes (POST/PUT/PATCH/DELETE) from a browser must come from the server's own origin (403 otherwise);
* a write with a body must say Content-Length (411), stay under the app's byte limit (413) and have one of the
  app's content types (415; ``application/json`` only for the live view, which a cross-site form cannot send);
* errors are one line of JSON, ``{"error": "..."}``.

The checks are a plain ASGI middleware (`Guard`), not Starlette's ``BaseHTTPMiddleware``, so streaming responses
(MJPEG) pass through it untouched. FastAPI, Starlette and uvicorn are imported only when a server is built.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .io.base import InputError

__all__ = ["Guard", "HttpServer", "error_body", "install_error_handlers", "is_loopback", "url_for"]

log = logging.getLogger("rtvos.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WRITES = ("POST", "PUT", "PATCH", "DELETE")


def is_loopback(host: str) -> bool:
    """Whether a bind address (or a Host header's name) is this machine only; "" and 0.0.0.0 are not."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # "" or a host name: treat as reachable from the network
        return False


def url_for(host: str, port: int, path: str = "/") -> str:
    """The URL a person opens for a server bound to ``host:port`` (a wildcard bind is opened via loopback)."""
    name = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    if ":" in name:
        name = f"[{name}]"
    return f"http://{name}:{port}{path}"


def error_body(message: object) -> bytes:
    """The one error format of both apps: ``{"error": "one line"}``."""
    return json.dumps({"error": " ".join(str(message).split())}).encode()


def install_error_handlers(app: Any) -> None:
    """FastAPI's own errors (404, 405, a body that fails its model) in the one-line format, ``{"error": ...}``."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    def respond(status: int, message: object) -> Response:
        return Response(error_body(message), status_code=status, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> Response:
        return respond(err.status_code, err.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        e = err.errors()[0] if err.errors() else {}
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msg = str(e.get("msg", "invalid request")).removeprefix("Value error, ")
        return respond(422, f"{loc}: {msg}" if loc else msg)


def _host_name(host_header: str) -> str:
    """'127.0.0.1:8080' → '127.0.0.1', '[::1]:80' → '::1', 'localhost' → 'localhost'."""
    text = host_header.strip().lower()
    if text.startswith("["):
        return text[1 : text.index("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Guard:
    """ASGI middleware with the rules in the module docstring.

    ``loopback``: whether the server is bound to a loopback address (then Host must be loopback too; a server
    bound to the network on purpose cannot know its public names and accepts any Host). ``max_body``: bytes a
    write may carry. ``content_types``: what a write with a body may be.
    """

    def __init__(self, app: ASGIApp, *, loopback: bool, max_body: int,
                 content_types: tuple[str, ...] = ("application/json",)) -> None:
        self.app = app
        self.loopback = loopback
        self.max_body = max_body
        self.content_types = content_types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            status, message = refusal
            await _send_error(send, status, message)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> tuple[int, str] | None:
        """(status, message) when the request is refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host")
        # Browsers always send Host; raw HTTP/1.0 may not, and cannot be a rebinding attack then.
        if self.loopback and host is not None and not is_loopback(_host_name(host)):
            return 421, f"unexpected Host header {host!r}: this server only answers on loopback"
        method, path = scope.get("method", "GET"), scope.get("path", "/")
        if method not in _WRITES:
            return None
        origin = headers.get("origin")
        if origin is not None:  # a browser: the page must be this server's own (no cross-site writes)
            if not (origin.startswith("http://") and host is not None
                    and origin[len("http://"):].rstrip("/").lower() == host.lower()):
                return 403, f"cross-origin request refused (Origin {origin!r})"
        length = headers.get("content-length")
        if length is None:
            if "transfer-encoding" in headers:
                return 411, f"{method} {path}: Content-Length required"
            return None  # no body (DELETE, an empty POST)
        if not length.isdigit():
            return 400, f"bad Content-Length {length!r}"
        if int(length) > self.max_body:
            return 413, f"body too large ({length} bytes, at most {self.max_body})"
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if int(length) > 0 and ctype not in self.content_types:
            return 415, f"{method} {path} needs Content-Type {' or '.join(self.content_types)}, got {ctype or 'none'!r}"
        return None


async def _send_error(send: Send, status: int, message: str) -> None:
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class HttpServer:
    """An ASGI app on uvicorn in a daemon thread. No signal handlers there: Ctrl-C/SIGTERM stay with the
    caller's main thread (the model loop). Port 0 picks a free port; :attr:`port` is the bound one."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, name: str = "rtvos-http",
                 what: str = "serve") -> None:
        if not 0 <= int(port) <= 65535:
            raise InputError(f"port must be in 0..65535, got {port}")
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
            sock.listen(64)
        except OSError as e:
            sock.close()
            reason = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise InputError(f"cannot {what} on {host}:{port}: {reason}") from None
        self.host = host
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        # timeout_graceful_shutdown: a client that never reads cannot hold close() for long.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", log_config=None,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._sock.close()
