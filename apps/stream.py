"""`rtvos stream URL`: segment a network stream (rtsp/rtsps/rtmp/http/https) live.

With no viewer and no first mask it serves the live view on 127.0.0.1:8080, where the first box is dragged;
with --mask/--box and a file output (--out, --masks, --jsonl) it records headless. Ctrl-C ends the run
normally: every output is flushed and the summary printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .segment import Outputs, add_common_options, parse_serve, run_stream

DEFAULT_SERVE = ("127.0.0.1", 8080)


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


def live_outputs(cmd: str, args: argparse.Namespace, *, prefer_window: bool) -> Outputs:
    """Outputs from the flags; when no viewer is asked for, pick the one a user expects and say so.

    Without --mask/--box the browser is the only way to give the first box, so it is served. Otherwise the
    webcam app shows a window when a display exists; failing that (and always for streams) a run with a file
    output records headless, and one with nothing else to output serves the live view.
    """
    from rtvos.io.sinks import display_available

    serve = parse_serve(args.serve) if args.serve is not None else None
    show = bool(args.show)
    has_mask = bool(args.mask or args.box or args.point)
    files = bool(args.out or args.masks or args.jsonl or args.mask_video)
    if not show and serve is None:
        if not has_mask:
            serve = DEFAULT_SERVE
            print(f"rtvos {cmd}: serving the live view to draw the first box (or give --mask/--box)",
                  file=sys.stderr)
        elif prefer_window and display_available():
            show = True
            print(f"rtvos {cmd}: showing the overlay in a window (Esc or q to stop); --serve for the browser",
                  file=sys.stderr)
        elif not files:
            serve = DEFAULT_SERVE
            print(f"rtvos {cmd}: serving the live view (nothing else to output; --out FILE.mp4 records)",
                  file=sys.stderr)
    return Outputs(
        video=Path(args.out) if args.out else None,
        masks=Path(args.masks) if args.masks else None,
        jsonl=Path(args.jsonl) if args.jsonl else None,
        mask_video=Path(args.mask_video) if args.mask_video else None,
        mask_video_mode=args.mask_video_mode,
        show=show,
        serve=serve,
    )


def run(args: argparse.Namespace) -> int:
    outputs = live_outputs("stream", args, prefer_window=False)
    return run_stream("stream", args, args.url, outputs)
