"""`rtvos stream URL`: segment a network stream (rtsp/rtsps/rtmp/http/https) live.

With no viewer and no first mask it serves the live view on 127.0.0.1:8080, where the first box is dragged;
with --mask/--box and a file output (--out, --masks, --jsonl) it records headless. Ctrl-C ends the run
normally: every output is flushed and the summary printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rtvos.common import display_available

from .segment import PROMPT_FLAGS, add_common_options, run_stream

DEFAULT_SERVE = "127.0.0.1:8080"
#: Outputs named by the flags that set them, in the library's one-line errors.
NAMES = {"masks": "--masks", "video": "--out", "jsonl": "--jsonl", "mask_video": "--mask-video",
         "prompt": PROMPT_FLAGS, "either": "--mask or --box/--point"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("stream", help="segment a network stream (rtsp, rtmp, http) live")
    p.add_argument("url", help="stream URL, e.g. rtsp://camera.local:554/live (credentials are never printed)")
    add_live_outputs(p)
    p.set_defaults(func=run)


def add_live_outputs(p: argparse.ArgumentParser) -> None:
    """File outputs of the live apps (segment writes a folder instead) plus the shared options."""
    p.add_argument("--out", metavar="FILE.mp4", help="write the overlay video here")
    p.add_argument("--masks", metavar="DIR", help="write one palette PNG mask per frame here")
    add_common_options(p)


def run_live(cmd: str, args: argparse.Namespace, source: str | int, *, prefer_window: bool) -> int:
    """Run with the viewer a user expects when none is asked for, saying which.

    Without --mask/--box/--point the browser is the only way to give the first box, so it is served. Otherwise
    the webcam app shows a window when a display exists; failing that (and always for streams) a run with a file
    output records headless, and one with nothing else to output serves the live view.
    """
    serve, show = args.serve, bool(args.show)
    if not show and serve is None:
        if not (args.mask or args.box or args.point):
            serve = DEFAULT_SERVE
            print(f"rtvos {cmd}: serving the live view to draw the first box (or give --mask/--box)", file=sys.stderr)
        elif prefer_window and display_available():
            show = True
            print(f"rtvos {cmd}: showing the overlay in a window (Esc or q to stop); --serve for the browser",
                  file=sys.stderr)
        elif not (args.out or args.masks or args.jsonl or args.mask_video):
            serve = DEFAULT_SERVE
            print(f"rtvos {cmd}: serving the live view (nothing else to output; --out FILE.mp4 records)",
                  file=sys.stderr)
    return run_stream(cmd, args, source, masks=args.masks, overlay=args.out, show=show, serve=serve, names=NAMES)


def run(args: argparse.Namespace) -> int:
    return run_live("stream", args, args.url, prefer_window=False)
