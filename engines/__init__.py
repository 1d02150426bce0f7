"""TensorRT engine building and the engine cache (`engines/build.py`, re-exporting `rtvos.backends.tensorrt_engines`).

Imports rtvos; rtvos never imports this package. Imports tensorrt lazily.
"""

from __future__ import annotations

from rtvos.common import lazy_attributes

__all__: list[str] = []

#: `rtvos build-engine`'s entry; tensorrt loads only when it runs.
_LAZY = {"build_engine": ".build"}
__all__ += list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
