"""`rtvos segment [SOURCE] --mask FIRST.png --out DIR`: masks as DAVIS PNGs plus an overlay MP4.

Argument parsing only: the flags become plain values (paths, boxes as typed, output specs, a live view address)
for `rtvos.track`, which checks them all once and runs the stream. The options below are shared with
`rtvos webcam` and `rtvos stream`, which differ only in their defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from rtvos.common import (
    APPEARANCE_MODES,
    AUTO,
    BOX_FORMAT,
    BOX_FORMATS,
    BUILTIN_BACKENDS,
    DEFAULT_APPEARANCE,
    DEFAULT_OUT,
    MASK_VIDEO_MODES,
    PRECISIONS,
)

#: The flags that give a first mask, for the library's error when none is given.
PROMPT_FLAGS = "--mask FIRST.png, --box X1,Y1,X2,Y2, --point X,Y, or --serve to drag a box in the browser"
#: Outputs named by the flags that set them, in the library's one-line errors.
NAMES = {"masks": "--out (mask folder)", "video": "the overlay", "jsonl": "--jsonl", "mask_video": "--mask-video",
         "prompt": PROMPT_FLAGS, "either": "--mask or --box/--point"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("segment", help="segment a video, a folder of frames or a stream from a first-frame mask")
    p.add_argument("source", nargs="?",
                   help="video file, folder of frames, webcam index, or rtsp/rtmp/http URL "
                        "(default: the shipped sample clip)")
    p.add_argument("--out", help=f"output folder (default: ./{DEFAULT_OUT}/<source name>)")
    p.add_argument("--no-video", action="store_true", help="do not write the overlay MP4")
    p.add_argument("--no-masks", action="store_true", help="do not write per-frame PNG masks")
    add_common_options(p)
    p.set_defaults(func=run)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """First mask, model, viewers and source options shared by segment, webcam and stream."""
    first = p.add_argument_group("first mask (one of; with none, --serve lets you drag a box in the browser)")
    first.add_argument("--mask", help="first-frame mask PNG (palette ids kept, or 0/255)")
    first.add_argument("--box", metavar="X1,Y1,X2,Y2", action="append", default=None,
                       help="object box on the first frame: top-left and bottom-right corners x1,y1,x2,y2 in pixels "
                            "(GrabCut; as SAM 2, ultralytics, supervision); repeat for several objects")
    first.add_argument("--box-format", choices=BOX_FORMATS, default=BOX_FORMAT,
                       help="how --box is written: xyxy = x1,y1,x2,y2 (default) or xywh = x,y,width,height")
    first.add_argument("--point", metavar="X,Y[,+|-]", action="append", default=None,
                       help="a click on the first frame: on an object (x,y or x,y,+) or on background (x,y,-); "
                            "clicks inside a --box refine it, the others make one more object; repeatable")
    out = p.add_argument_group("outputs and viewers")
    out.add_argument("--jsonl", metavar="FILE",
                     help="per-frame JSON lines log (timings, latency, object areas, boxes, COCO RLE masks)")
    out.add_argument("--mask-video", metavar="FILE", help="also write the masks as an MP4 (see --mask-video-mode)")
    out.add_argument("--mask-video-mode", choices=MASK_VIDEO_MODES, default="color",
                     help="color: each object in its palette colour; alpha: a white-on-black matte (default: color)")
    out.add_argument("--exist-ok", action="store_true",
                     help="write into an output folder that already holds results (its old frame PNGs are removed)")
    out.add_argument("--show", action="store_true", help="show the overlay in a window (needs a display)")
    out.add_argument("--serve", metavar="HOST:PORT",
                     help="live view in the browser (MJPEG), e.g. 127.0.0.1:8080 or :8080 (port 0: any free port); "
                          "the page stays up after the source ends, until Ctrl-C")
    out.add_argument("--exit-at-end", action="store_true",
                     help="with --serve: exit when the source ends instead of keeping the page up (scripts)")
    out.add_argument("--no-pace", action="store_true",
                     help="with --serve or --show on a file: run flat out instead of at the clip's frame rate")
    model = p.add_argument_group("model")
    model.add_argument("--model", default="default",
                       help="'default' (DIS flow + appearance, no network), a name `rtvos info` lists, or a checkpoint path")
    model.add_argument("--appearance", default=None, choices=APPEARANCE_MODES,
                       help="grid: fuse the propagated scores with a causal colour model that follows the object "
                       f"(re-detects lost objects); none: flow propagation alone (default {DEFAULT_APPEARANCE}, "
                       "or none with --mask-resolution model, where it does not apply)")
    model.add_argument("--size", type=int, default=None, help="model input size S, multiple of 64 (default: model's)")
    model.add_argument("--device", default="auto", help="torch device: auto (CUDA when usable, else cpu), cpu or cuda:N")
    model.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice; 1 can be faster on a busy 2-core machine)")
    model.add_argument("--mask-resolution", choices=("full", "model"), default="full",
                       help="propagate masks at frame resolution (default) or at S/4 as in the paper")
    model.add_argument("--backend", default="auto", choices=(AUTO, *BUILTIN_BACKENDS),
                       help="what runs the network: auto = ONNX Runtime on CPU, eager on GPU (default: auto)")
    model.add_argument("--precision", default="fp32", choices=PRECISIONS, help="network precision")
    src = p.add_argument_group("source")
    src.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    src.add_argument("--transport", choices=("tcp", "udp"), default=None, help="RTSP transport (default: tcp)")
    src.add_argument("--policy", choices=("drop", "block"), default=None,
                     help="live sources: keep only the newest frame (drop, default) or never skip one (block)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")


def source_spec(text: str) -> str | int:
    """A bare number is a webcam index; anything else (path, /dev/videoN, URL) goes to rtvos.track as is."""
    return int(text) if text.isdigit() else text


def sayer(cmd: str) -> Callable[[str], None]:
    """The run's messages as `rtvos CMD: ...` lines on stderr."""
    return lambda msg: print(f"rtvos {cmd}: {msg}", file=sys.stderr, flush=True)


def run_stream(cmd: str, args: argparse.Namespace, source: str | int | None, **outputs: Any) -> int:
    """`rtvos.track` with the shared flags and this app's ``outputs``; the summary on stdout, then (with a live
    view, unless --exit-at-end) the page stays up until Ctrl-C."""
    import rtvos

    tracking = rtvos.track(
        source, mask=args.mask, boxes=args.box, points=args.point, box_format=args.box_format,
        jsonl=args.jsonl, mask_video=args.mask_video, mask_video_mode=args.mask_video_mode,
        exist_ok=args.exist_ok, say=sayer(cmd), model=args.model, size=args.size, device=args.device,
        backend=args.backend, precision=args.precision, mask_resolution=args.mask_resolution,
        appearance=args.appearance, threads=args.threads, max_frames=args.max_frames, policy=args.policy,
        transport=args.transport, pace=False if args.no_pace else None,
        progress="off" if args.quiet else "auto", **outputs)
    with tracking:
        summary = tracking.run()
        if summary.frames:
            print(tracking.report())
            if not args.exit_at_end:
                tracking.keep_serving()
    return 0


def run(args: argparse.Namespace) -> int:
    out = args.out
    if args.source is None and out is None:
        args.exist_ok = True  # the demo may replace its own earlier results (README's command, run twice)
    return run_stream("segment", args, None if args.source is None else source_spec(args.source),
                      masks=False if args.no_masks else (out or True),
                      overlay=False if args.no_video else (os.path.join(out, "overlay.mp4") if out else True),
                      show=args.show, serve=args.serve, names=NAMES)
