"""TensorRT engine building and the engine cache (`engines/build.py`, re-exporting `rtvos.backends.tensorrt_engines`).

Imports rtvos; rtvos never imports this package. Imports tensorrt lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__: list[str] = []

#: `rtvos build-engine`'s entry; tensorrt loads only when it runs.
_LAZY = {"build_engine": ".build"}
__all__ += list(_LAZY)


def __getattr__(name: str) -> Any:
    """The re-exported names load on first use, so importing this package stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
