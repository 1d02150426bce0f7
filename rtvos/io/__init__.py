"""Input/output: frame sources (files, folders, webcams, streams), MP4 writing, DAVIS masks and overlays."""

from .live import LiveSource, NetworkSource, WebcamSource, redact_text, redact_url
from .masks import DAVIS_PALETTE, davis_palette, read_mask, write_mask
from .overlay import object_boundaries, overlay
from .video import (
    IMAGE_EXTENSIONS,
    Frame,
    FrameSource,
    ImageFolderSource,
    InputError,
    VideoFileSource,
    VideoWriter,
    open_source,
)

__all__ = [
    "DAVIS_PALETTE",
    "IMAGE_EXTENSIONS",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "InputError",
    "LiveSource",
    "NetworkSource",
    "VideoFileSource",
    "VideoWriter",
    "WebcamSource",
    "davis_palette",
    "object_boundaries",
    "open_source",
    "overlay",
    "read_mask",
    "redact_text",
    "redact_url",
    "write_mask",
]
