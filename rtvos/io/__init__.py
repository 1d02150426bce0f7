"""Input/output: frame sources (files, folders, webcams, streams), MP4 writing, DAVIS masks and overlays.

Modules: :mod:`~rtvos.io.base` (shared types: :class:`InputError`, :class:`Frame`, the :class:`FrameSource`
protocol), :mod:`~rtvos.io.video` (file and folder sources), :mod:`~rtvos.io.live` (webcams, network streams),
:mod:`~rtvos.io.arrays` (frames given as arrays), :mod:`~rtvos.io.source` (:func:`open_source`,
:func:`as_source`), :mod:`~rtvos.io.writer` (:class:`VideoWriter`), plus masks,
overlays, prompts and sinks. ``base`` imports nothing else from the package; ``video`` and ``live`` import only
``base``; ``source`` imports them and ``arrays``.
"""

from .arrays import ArraySource
from .base import (
    DEFAULT_FOLDER_FPS,
    IMAGE_EXTENSIONS,
    Frame,
    FrameSource,
    FrameSourceBase,
    InputError,
    check_fps,
    natural_key,
)
from .live import LiveSource, NetworkSource, WebcamSource, redact_text, redact_url
from .masks import DAVIS_PALETTE, davis_palette, read_mask, write_mask
from .overlay import object_boundaries, overlay
from .source import as_source, open_source
from .video import ImageFolderSource, VideoFileSource
from .writer import VideoWriter

__all__ = [
    "ArraySource",
    "DAVIS_PALETTE",
    "DEFAULT_FOLDER_FPS",
    "IMAGE_EXTENSIONS",
    "Frame",
    "FrameSource",
    "FrameSourceBase",
    "ImageFolderSource",
    "InputError",
    "LiveSource",
    "NetworkSource",
    "VideoFileSource",
    "VideoWriter",
    "WebcamSource",
    "as_source",
    "check_fps",
    "davis_palette",
    "natural_key",
    "object_boundaries",
    "open_source",
    "overlay",
    "read_mask",
    "redact_text",
    "redact_url",
    "write_mask",
]
