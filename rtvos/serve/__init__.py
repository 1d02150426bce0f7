"""`rtvos serve`: many streams as a long-running service (issue #19).

:mod:`~rtvos.serve.config` (the streams file and API request models, pydantic), :mod:`~rtvos.serve.engine`
(streams in this process on a `rtvos.MultiTracker`), :mod:`~rtvos.serve.ray_engine` (streams on Ray actors with
recovery from a killed worker), :mod:`~rtvos.serve.app` (the HTTP API: FastAPI on uvicorn, Prometheus /metrics).
The HTTP stack and its rules are `rtvos.server`'s, shared with the live view (`rtvos.web`, served under ``/live/``).
Needs the ``serve`` extra (``ray`` for the Ray engine); nothing here is imported by ``import rtvos``.
"""

from __future__ import annotations

from ..common import lazy_attributes

__all__: list[str] = []

#: The service's parts (`rtvos serve` wires them); FastAPI, Prometheus and Ray load only when asked for.
_LAZY = {
    "create_app": ".app", "ServeConfig": ".config", "StreamSpec": ".config", "load_config": ".config",
    "Metrics": ".metrics", "LocalEngine": ".engine", "RayEngine": ".ray_engine", "HttpServer": "..server",
    "is_loopback": "..server", "LiveHub": "..web"
}
__all__ += list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
