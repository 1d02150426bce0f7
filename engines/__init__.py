"""TensorRT engine building and the on-disk engine cache (`engines/build.py`). Imports tensorrt lazily."""
