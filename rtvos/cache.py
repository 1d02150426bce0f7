"""The user cache directory: the one place that decides where rtvos keeps rebuildable files.

ONNX exports (``onnx/``) and TensorRT engines (``engines/``) are derived from the weights and cost seconds to
minutes to make, so they are cached per user, never inside the installed package (which may be read-only and
is shared by every user of an environment).

Root: ``$RTVOS_CACHE_DIR`` if set, else ``$RTVOS_CACHE`` (the older name), else ``$XDG_CACHE_HOME/rtvos``
(when that is an absolute path, as the XDG spec asks), else ``~/.cache/rtvos``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV_VARS", "cache_root", "user_cache_dir"]

#: Environment variables naming the cache root, in order of precedence.
CACHE_ENV_VARS: tuple[str, ...] = ("RTVOS_CACHE_DIR", "RTVOS_CACHE")


def cache_root() -> Path:
    """The rtvos cache root, read from the environment at each call (nothing is created)."""
    for var in CACHE_ENV_VARS:
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "rtvos"
    return Path("~/.cache/rtvos").expanduser()


def user_cache_dir(kind: str) -> Path:
    """``cache_root() / kind``, e.g. ``user_cache_dir("engines")``; the caller creates it when it writes."""
    if not kind or os.sep in kind or (os.altsep and os.altsep in kind) or kind in (".", ".."):
        raise ValueError(f"cache kind must be a plain folder name, got {kind!r}")
    return cache_root() / kind
