"""The sample clip shipped in the wheel (rtvos/assets): what `rtvos segment` and `rtvos bench` run with no input."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sample_clip_paths"]


def sample_clip_paths() -> tuple[Path, Path]:
    """The shipped sample clip and its first-frame mask (same files as `rtvos segment` with no argument)."""
    assets = resources.files("rtvos") / "assets"
    return Path(str(assets / "sample.mp4")), Path(str(assets / "sample_mask.png"))
