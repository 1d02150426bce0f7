"""Facts that the library and the apps share, each defined once here.

Imports nothing heavy: the CLI reads it to build its parser before torch is (or is not) imported.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["APPEARANCE_MODES", "lazy_attributes", "BOX_FORMAT", "BOX_FORMATS", "DEFAULT_OUT", "MASK_VIDEO_MODES",
           "DEFAULT_APPEARANCE", "AUTO", "BUILTIN_BACKENDS", "PRECISIONS", "STAGES", "Stopped",
           "check_precision", "display_available", "one_line", "stage_order", "stop_reason"]

#: A `backend=`/`device=` value that picks the best choice for the device at run time (rtvos.backends).
AUTO = "auto"
#: The backends rtvos registers itself (rtvos.backends): eager first, the reference every other one must match.
BUILTIN_BACKENDS = ("eager", "compile", "onnx", "tensorrt")
#: Appearance stages of the Segmenter (rtvos.appearance): "grid" fuses a causal colour model with the propagated
#: scores, "none" is flow propagation alone. The default everywhere (Segmenter, track, the CLI, eval).
APPEARANCE_MODES = ("grid", "none")
DEFAULT_APPEARANCE = "grid"
#: Boxes everywhere (track, the CLI, the service's YAML/API, results, the live view) are x1,y1,x2,y2 in pixels,
#: as SAM 2, ultralytics and supervision take them; "xywh" (x, y, width, height) only where asked for by name.
BOX_FORMAT = "xyxy"
BOX_FORMATS = ("xyxy", "xywh")
#: How a mask MP4 draws the masks: each object in its palette colour, or a white-on-black matte.
MASK_VIDEO_MODES = ("color", "alpha")
#: Where `rtvos segment` writes when no --out is given: DEFAULT_OUT/<source name>.
DEFAULT_OUT = "rtvos_out"
#: Network precisions every backend accepts (fp16 needs a CUDA device for the eager backend).
PRECISIONS = ("fp32", "fp16")
#: Timed stages of one frame, in the order they run: `wait` (live) or `decode` (file) on the reader thread;
#: the model's stages (`flow` is the wait for DIS, started beside the embedding; fused backends report
#: `embed_match` instead of `embed` + `match`); then the sinks' `png`, `overlay` and `encode`. Stage tables
#: (the run summary, the bench report) list stages in this order, unknown ones last by name.
STAGES = ("decode", "wait", "preprocess", "embed", "flow", "match", "embed_match", "propagate", "appearance",
          "postprocess", "png", "overlay", "encode")


def display_available() -> bool:
    """Whether a window can be tried at all: on X11 systems that needs DISPLAY."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY"))
    return True


def check_precision(precision: str) -> str:
    """`precision` itself, or ValueError naming the accepted values."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def stage_order(names: Iterable[str]) -> list[str]:
    """`names` in pipeline order (:data:`STAGES`), unknown names last, sorted."""
    have = list(names)
    return [s for s in STAGES if s in have] + sorted(n for n in have if n not in STAGES)


def one_line(e: BaseException, *, with_type: bool = False) -> str:
    """The first line of an error's message, for a one-line report (the type's name when the message is empty;
    `with_type` prefixes it, where the reader cannot tell the kind of failure from the context)."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    return f"{type(e).__name__}: {lines[0]}" if with_type else lines[0]


class Stopped(KeyboardInterrupt):
    """A request to end a run normally, flushing every output (SIGTERM, a service stopping): handled like Ctrl-C,
    with ``reason`` saying what stopped it, so a summary names the cause without guessing from a class name."""

    def __init__(self, reason: str = "stopped") -> None:
        super().__init__(reason)
        self.reason = reason


def stop_reason(e: KeyboardInterrupt) -> str:
    """What ended a run: a :class:`Stopped`'s reason, else "Ctrl-C" (a plain KeyboardInterrupt is SIGINT)."""
    return e.reason if isinstance(e, Stopped) else "Ctrl-C"


def lazy_attributes(package: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A package's module ``__getattr__`` (PEP 562) that imports each of ``names`` (name → module, relative to
    ``package``) on first use and keeps it in ``namespace``, so importing the package stays light."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
