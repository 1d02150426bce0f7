"""The HTTP API of `rtvos serve`: FastAPI (OpenAPI page at /docs) served by uvicorn, loopback by default.

    GET    /streams                  every stream's status (JSON list)
    POST   /streams                  add a stream: a `StreamSpec` as JSON, or YAML (one stream or {streams: [...]})
    GET    /streams/{id}             one stream's status
    DELETE /streams/{id}             stop it (its sinks are flushed) and forget it
    POST   /streams/{id}/reanchor    {"boxes": ["X,Y,W,H", ...], "points": [...]}: re-anchor on its next frame
    GET    /metrics                  Prometheus text format
    GET    /healthz                  {"ok": true, "engine": ..., "streams": N}

Errors are 4xx with a one-line JSON body ``{"error": "..."}``: 400 bad input (bad YAML, a bad box, a missing
file), 404 unknown stream id, 409 a stream id already running, 413 a body over 64 KiB, 422 a body that is not a
stream spec. On a loopback address only loopback Host headers are accepted (no DNS rebinding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..io.base import InputError
from .config import ReanchorRequest, StreamSpec, one_line_validation, parse_config
from .engine import Engine
from .metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["MAX_BODY", "create_app", "is_loopback"]

MAX_BODY = 64 * 1024
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def create_app(engine: Engine, metrics: Metrics, *, base: Path | None = None, loopback: bool = True) -> FastAPI:
    """The API over ``engine``; relative paths in added streams are taken from ``base`` (the streams file's folder)."""
    from .. import __version__

    app = FastAPI(title="rtvos serve", version=__version__,
                  description="Many video streams segmented by one rtvos service: list, add, remove, re-anchor.")
    root = base or Path.cwd()

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if loopback:
            text = request.headers.get("host", "")
            host = text[1:text.index("]")] if text.startswith("[") and "]" in text else text.rsplit(":", 1)[0]
            if host not in _LOOPBACK_HOSTS:
                return _error(403, f"Host {host!r} refused: this service only answers on loopback")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            return _error(413, f"request body of {length} bytes is over the {MAX_BODY} byte limit")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        e = err.errors()[0] if err.errors() else {}
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msg = str(e.get("msg", "invalid request")).removeprefix("Value error, ")
        return _error(422, f"{loc}: {msg}" if loc else msg)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "engine": engine.name, "streams": len(engine.status())}

    @app.get("/streams")
    def list_streams() -> list[dict[str, Any]]:
        return engine.status()

    @app.post("/streams", status_code=201, openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": StreamSpec.model_json_schema()},
        "application/yaml": {"schema": {"type": "string"}}}, "required": True}})
    async def add_stream(request: Request) -> Any:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"request body of {len(body)} bytes is over the {MAX_BODY} byte limit")
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if kind in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
                import yaml

                try:
                    doc = yaml.safe_load(body.decode("utf-8", "replace"))
                except yaml.YAMLError:
                    doc = None
                    parse_config(body.decode("utf-8", "replace"), "request body")  # raises the one-line message
                text = body.decode("utf-8", "replace") if isinstance(doc, dict) and "streams" in doc else \
                    yaml.safe_dump({"streams": [doc]})
                specs = parse_config(text, "request body").streams
            elif kind == "application/json":
                import json

                try:
                    doc = json.loads(body or b"null")
                except ValueError as err:
                    return _error(400, f"request body is not JSON: {err}")
                specs = [StreamSpec.model_validate(doc)]
            else:
                return _error(415, f"content type {kind!r}: send application/json or application/yaml")
        except ValidationError as err:
            return _error(422, one_line_validation(err))
        except InputError as err:
            return _error(400, str(err))
        added = []
        for spec in specs:
            try:
                added.append(await _in_thread(engine.add, spec.resolved(root)))
            except InputError as err:
                status = 409 if "already exists" in str(err) else 400
                return _error(status, f"stream {spec.id}: {err}")
            except RuntimeError as err:  # a Ray worker restarting: the client may retry
                return _error(503, f"stream {spec.id}: {err}")
        return added[0] if len(added) == 1 else added

    @app.get("/streams/{stream_id}")
    def get_stream(stream_id: str) -> Any:
        try:
            return engine.status(stream_id)[0]
        except KeyError:
            return _error(404, f"no stream {stream_id!r}")

    @app.delete("/streams/{stream_id}")
    def delete_stream(stream_id: str) -> Any:
        try:
            out = engine.remove(stream_id)
        except KeyError:
            return _error(404, f"no stream {stream_id!r}")
        metrics.forget(stream_id)
        return out

    @app.post("/streams/{stream_id}/reanchor", status_code=202)
    def reanchor(stream_id: str, req: ReanchorRequest) -> Any:
        try:
            engine.reanchor(stream_id, req)
        except KeyError:
            return _error(404, f"no running stream {stream_id!r}")
        except InputError as err:
            return _error(400, str(err))
        return {"id": stream_id, "reanchor": "next frame"}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _in_thread(fn: Any, *args: Any) -> Any:
    """Blocking engine calls (opening a source, a remote actor) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
