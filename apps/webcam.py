"""`rtvos webcam [INDEX]`: segment a camera live (an index, or a /dev/videoN path).

Without --mask/--box it serves the live view on 127.0.0.1:8080, where the first box is dragged on the frame
in hand; with one it shows a window when a display exists (else it records to --out, or serves). Ctrl-C, or
Esc/q in the window, ends the run normally with every output flushed.
"""

from __future__ import annotations

import argparse
from typing import Any

from .segment import source_spec
from .stream import add_live_outputs, run_live


def add_parser(sub: Any) -> None:
    p = sub.add_parser("webcam", help="segment a webcam live (window or browser view)")
    p.add_argument("index", nargs="?", default="0", help="camera index or /dev/videoN (default: 0)")
    add_live_outputs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_live("webcam", args, source_spec(args.index), prefer_window=True)
