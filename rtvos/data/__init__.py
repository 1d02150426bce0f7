"""Datasets and synthetic clips used for tests, smoke runs and evaluation."""

from .synthetic import (
    SyntheticClip,
    SyntheticClipPaths,
    ellipse_mask,
    make_synthetic_clip,
    write_synthetic_clip,
)

__all__ = [
    "SyntheticClip",
    "SyntheticClipPaths",
    "ellipse_mask",
    "make_synthetic_clip",
    "write_synthetic_clip",
]
