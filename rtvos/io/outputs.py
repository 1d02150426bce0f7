"""What a run writes and shows, checked before any work: the output specs of `rtvos.track` (mask folder, overlay
and mask MP4s, JSON lines log, window, live view address), the checks on them, and the sinks they become.

Nothing here makes or removes a file: the checks only look, so a bad flag costs nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import InputError
from .sinks import (
    JsonlSink,
    LiveViewSink,
    MaskSink,
    MaskVideoSink,
    Sink,
    VideoSink,
    WindowSink,
    check_output_folder,
    check_video_path,
    is_mask_png_name,
)

__all__ = ["OUTPUT_NAMES", "Outputs", "build_sinks", "check_output_paths", "parse_serve", "safe_name"]

#: How an output is named in errors, by default `rtvos.track`'s argument (the apps pass their flags instead).
OUTPUT_NAMES = {"masks": "masks= (mask folder)", "video": "overlay=", "jsonl": "jsonl=", "mask_video": "mask_video="}


@dataclass(frozen=True)
class Outputs:
    """What a run writes and shows."""

    video: Path | None = None
    masks: Path | None = None
    jsonl: Path | None = None
    mask_video: Path | None = None
    mask_video_mode: str = "color"
    show: bool = False
    serve: tuple[str, int] | None = None

    @property
    def any_file(self) -> bool:
        return any(p is not None for p in (self.video, self.masks, self.jsonl, self.mask_video))


def parse_serve(text: str | tuple[str, int]) -> tuple[str, int]:
    """'HOST:PORT', ':PORT', 'PORT' or '[::1]:PORT' (or a (host, port) pair) → (host, port); the host defaults
    to 127.0.0.1."""
    if isinstance(text, tuple):
        text = f"[{text[0]}]:{text[1]}" if ":" in str(text[0]) else f"{text[0]}:{text[1]}"
    m = re.fullmatch(r"(?:\[([^\]]+)\]|([^:\[\]]*)):(\d+)|(\d+)", str(text).strip())
    if m is None:
        raise InputError(f"--serve {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    port = int(m.group(3) or m.group(4))
    if not 0 <= port <= 65535:
        raise InputError(f"--serve {text!r}: port must be in 0..65535")
    host = m.group(1) or m.group(2) or "127.0.0.1"
    return host, port


def safe_name(name: str) -> str:
    """A source name usable as a folder name (stream names can hold ':' or '/')."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "stream"


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (also through symlinks, hard links or ``..``), existing or not yet."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _kind(path: Path) -> str:
    """What a path that exists but is not a folder is, for the one-line error ("a file", "a device", ...)."""
    import stat

    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def check_output_paths(outs: Outputs, exist_ok: bool = False, inputs: dict[str, Path] | None = None,
                        labels: dict[str, str] | None = None) -> None:
    """Every output is checked before any work (nothing is made or removed here): each must be creatable (its
    nearest existing ancestor a writable folder), a video must have a suffix FFmpeg can write H.264 to, a mask
    folder already holding results needs ``exist_ok``, and no output may be an input (``inputs``: what it is →
    path) or another output, including a PNG the mask folder would get."""
    names = {**OUTPUT_NAMES, **(labels or {})}
    files = {k: Path(p) for k, p in (("video", outs.video), ("jsonl", outs.jsonl), ("mask_video", outs.mask_video))
             if p is not None}
    for key in ("video", "mask_video"):
        if key in files:
            check_video_path(files[key], names[key])
    if outs.masks is not None and outs.masks.exists() and not outs.masks.is_dir():
        raise InputError(f"{names['masks']} {outs.masks} is {_kind(outs.masks)}, not a folder")
    for key, path in files.items():
        if path.is_dir():
            raise InputError(f"{names[key]} {path} is a folder, expected a file path")
        if path.exists() and not path.is_file():
            raise InputError(f"{names[key]} {path} is {_kind(path)}, not a file rtvos can write")
    # Clashes: an output that is an input, or two outputs that are one file.
    for key, path in files.items():
        for what, src in (inputs or {}).items():
            if _same_file(path, src):
                raise InputError(f"{names[key]} {path} is {what}: refusing to overwrite it")
        for other, opath in files.items():
            if other == key:
                break  # each pair once, reported on the later of the two flags
            if _same_file(path, opath):
                raise InputError(f"{names[key]} {path} is the same file as {names[other]}")
        if outs.masks is not None and _same_file(path.parent, outs.masks) and is_mask_png_name(path.name):
            raise InputError(f"{names[key]} {path} is one of the mask PNGs written to {outs.masks}")
        if outs.masks is not None and _same_file(path, outs.masks):
            raise InputError(f"{names[key]} {path} is the mask folder")
    if outs.masks is not None:
        for what, src in (inputs or {}).items():
            if _same_file(outs.masks, src) or (src.is_file() and _same_file(src.parent, outs.masks)
                                               and is_mask_png_name(src.name)):
                raise InputError(f"{names['masks']} {outs.masks} would overwrite {what} {src}")
        check_output_folder(outs.masks, exist_ok)
    every: list[tuple[str, Path | None]] = [("masks", outs.masks), *files.items()]
    for key, out in every:
        if out is None:
            continue
        probe = out.absolute()
        if probe.is_file() and key != "masks":  # an earlier run's file: replaced (its folder must be writable)
            probe = probe.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise InputError(f"cannot create {names[key]} {out}: {probe} is {_kind(probe)}, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise InputError(f"cannot create {names[key]} {out}: {probe} is not writable")


def build_sinks(outs: Outputs, view: Any, title: str) -> list[Sink]:
    """The sinks for ``outs``, viewers first: they are what a person watches, so they get each frame before
    the encoders. The palette is the run's (the pipeline hands it to every sink), not passed here."""
    sinks: list[Sink] = []
    if view is not None:
        sinks.append(LiveViewSink(view))
    if outs.show:
        sinks.append(WindowSink(title=title))
    if outs.masks is not None:
        sinks.append(MaskSink(outs.masks))
    if outs.video is not None:
        sinks.append(VideoSink(outs.video))
    if outs.mask_video is not None:
        sinks.append(MaskVideoSink(outs.mask_video, outs.mask_video_mode))
    if outs.jsonl is not None:
        sinks.append(JsonlSink(outs.jsonl))
    return sinks
