"""TensorRT plugin for `rtvos::deform_conv2d` and its Torch-TensorRT converter: re-exported from
:mod:`rtvos.backends.tensorrt_plugin`.

The code lives in the library so that the engine builder in ``rtvos.backends`` never imports this package:
imports go ``plugins`` → ``rtvos``, never back. Nothing here imports tensorrt at import time.
"""

from __future__ import annotations

from rtvos.backends.tensorrt_plugin import (
    PLUGIN_NAME,
    import_tensorrt,
    register,
    register_converter,
    unavailable_reason,
)

__all__ = ["PLUGIN_NAME", "import_tensorrt", "unavailable_reason", "register", "register_converter"]
