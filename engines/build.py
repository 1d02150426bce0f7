"""TensorRT engine building and the engine cache: re-exported from :mod:`rtvos.backends.tensorrt_engines`.

The code lives in the library so that ``rtvos.backends.tensorrt`` (which builds an engine on first use) never
imports this package: imports go ``engines`` → ``rtvos``, never back. Engines are cached in the user cache
directory (``$RTVOS_ENGINE_DIR``, else ``engines/`` under ``$RTVOS_CACHE_DIR`` / ``~/.cache/rtvos``).
"""

from __future__ import annotations

from rtvos.backends.tensorrt_engines import *  # noqa: F403 - a re-export module
from rtvos.backends.tensorrt_engines import __all__ as __all__  # one list of the re-exported names
