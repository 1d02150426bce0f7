"""The HTTP API of `rtvos serve`: FastAPI (OpenAPI page at /docs) served by uvicorn, loopback by default.

    GET    /streams                  every stream's status (JSON list)
    POST   /streams                  add a stream: a `StreamSpec` as JSON, or YAML (one stream or {streams: [...]})
    GET    /streams/{id}             one stream's status
    DELETE /streams/{id}             stop it (its sinks are flushed) and forget it
    POST   /streams/{id}/reanchor    {"boxes": ["X1,Y1,X2,Y2", ...], "points": [...]}: re-anchor on its next frame
    GET    /metrics                  Prometheus text format
    GET    /healthz                  {"ok": true, "engine": ..., "streams": N}

Errors are 4xx with a one-line JSON body ``{"error": "..."}``: 400 bad input (bad YAML, a bad box, a missing
file), 404 unknown stream id, 409 a stream id already running, 413 a body over 64 KiB, 415 a body that is
neither JSON nor YAML, 422 a body that is not a stream spec; 421 a non-loopback Host on a loopback address (no DNS
rebinding) and 403 a cross-origin write, as for every rtvos server (`rtvos.server.Guard`).

With a `rtvos.web.LiveHub`, the live view of every stream is served here too: ``/live/`` (all streams on one
page) and ``/live/<id>/`` (one stream: MJPEG, stats, re-anchoring by dragging boxes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from ..io.base import InputError
from ..server import Guard, error_body, install_error_handlers
from .config import ReanchorRequest, StreamSpec, one_line_validation, parse_config
from .engine import Engine
from .metrics import CONTENT_TYPE_LATEST, Metrics

if TYPE_CHECKING:
    from ..web import LiveHub

__all__ = ["MAX_BODY", "create_app"]

MAX_BODY = 64 * 1024
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _error(status: int, message: str) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json")


def create_app(engine: Engine, metrics: Metrics, *, base: Path | None = None, loopback: bool = True,
               hub: LiveHub | None = None) -> FastAPI:
    """The API over ``engine``; relative paths in added streams are taken from ``base`` (the streams file's folder).
    ``hub``: the streams' live views, served under ``/live/``."""
    from .. import __version__

    app = FastAPI(title="rtvos serve", version=__version__,
                  description="Many video streams segmented by one rtvos service: list, add, remove, re-anchor.")
    root = base or Path.cwd()
    install_error_handlers(app)
    app.add_middleware(Guard, loopback=loopback, max_body=MAX_BODY, content_types=("application/json", *_YAML_TYPES))
    if hub is not None:
        from ..web import add_hub_routes

        add_hub_routes(app, hub)

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
            if kind in _YAML_TYPES:
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
        if hub is not None:
            hub.remove(stream_id)
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
