"""TensorRT plugins for rtvos custom ops. Nothing here imports tensorrt at import time."""
