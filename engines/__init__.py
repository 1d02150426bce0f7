"""TensorRT engine building and the engine cache (`engines/build.py`, re-exporting `rtvos.backends.tensorrt_engines`).

Imports rtvos; rtvos never imports this package. Imports tensorrt lazily.
"""
