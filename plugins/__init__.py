"""TensorRT plugins for rtvos custom ops (re-exporting `rtvos.backends.tensorrt_plugin`).

Imports rtvos; rtvos never imports this package. Nothing here imports tensorrt at import time.
"""
