"""`rtvos segment [SOURCE] --mask FIRST.png --out DIR`: masks as DAVIS PNGs plus an overlay MP4.

Any source `rtvos.io.open_source` accepts (file, folder of frames, webcam, rtsp/rtmp/http URL) runs through
`rtvos.pipeline`: decoding on a reader thread, the model on the main thread, PNG/H.264/log/window/browser output
on a writer thread, joined by bounded queues. The helpers below are shared with `rtvos webcam` and
`rtvos stream`, which differ only in their defaults.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtvos.common import APPEARANCE_MODES, AUTO, BUILTIN_BACKENDS, DEFAULT_APPEARANCE, PRECISIONS, stop_reason

if TYPE_CHECKING:
    from rtvos import Segmenter
    from rtvos.io import Frame
    from rtvos.io.sinks import Sink


def add_parser(sub: Any) -> None:
    p = sub.add_parser("segment", help="segment a video, a folder of frames or a stream from a first-frame mask")
    p.add_argument("source", nargs="?",
                   help="video file, folder of frames, webcam index, or rtsp/rtmp/http URL "
                        "(default: the shipped sample clip)")
    p.add_argument("--out", help="output folder (default: ./rtvos_out/<source name>)")
    p.add_argument("--no-video", action="store_true", help="do not write the overlay MP4")
    p.add_argument("--no-masks", action="store_true", help="do not write per-frame PNG masks")
    add_common_options(p)
    p.set_defaults(func=run)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """First mask, model, viewers and source options shared by segment, webcam and stream."""
    from rtvos.io.sinks import MASK_VIDEO_MODES

    first = p.add_argument_group("first mask (one of; with none, --serve lets you drag a box in the browser)")
    first.add_argument("--mask", help="first-frame mask PNG (palette ids kept, or 0/255)")
    first.add_argument("--box", metavar="X,Y,W,H", action="append", default=None,
                       help="object box on the first frame, in pixels (GrabCut); repeat for several objects")
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


def sample_paths() -> tuple[Path, Path]:
    """The shipped sample clip and its first-frame mask (one definition, in the library)."""
    from rtvos.data.sample import sample_clip_paths

    return sample_clip_paths()


def parse_serve(text: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT', 'PORT' or '[::1]:PORT' → (host, port); the host defaults to 127.0.0.1."""
    from rtvos.io import InputError

    m = re.fullmatch(r"(?:\[([^\]]+)\]|([^:\[\]]*)):(\d+)|(\d+)", text.strip())
    if m is None:
        raise InputError(f"--serve {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    port = int(m.group(3) or m.group(4))
    if not 0 <= port <= 65535:
        raise InputError(f"--serve {text!r}: port must be in 0..65535")
    host = m.group(1) or m.group(2) or "127.0.0.1"
    return host, port


@dataclass(frozen=True)
class Outputs:
    """What a run writes and shows; the apps fill it from their own flags."""

    video: Path | None = None
    masks: Path | None = None
    jsonl: Path | None = None
    mask_video: Path | None = None
    mask_video_mode: str = "color"
    show: bool = False
    serve: tuple[str, int] | None = None


def load_segmenter(args: argparse.Namespace) -> Segmenter:
    """The model from --model/--size/--device, with a loud banner when its weights are random."""
    import torch

    import rtvos
    from rtvos.backends import resolve_device
    from rtvos.models import load_model_reporting

    if args.threads is not None:
        if args.threads < 1:
            from rtvos.io import InputError

            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    model, random_weights = load_model_reporting(args.model)
    if random_weights:
        print("!" * 100 + f"\n!! WARNING: {model.meta.get('source')}: the model is NOT TRAINED; masks are "
              "meaningless (plumbing only).\n" + "!" * 100, file=sys.stderr)
    seg = rtvos.Segmenter(model, size=args.size, device=resolve_device(args.device),
                          mask_resolution=args.mask_resolution, backend=args.backend, precision=args.precision,
                          appearance=args.appearance)
    if not getattr(args, "quiet", False):
        from rtvos.backends import resolve_backend

        net = (f", S={seg.size_spec} backend {resolve_backend(args.backend, seg.device, args.precision)} "
               f"{args.precision}" if seg.has_network else "")
        print(f"rtvos: {seg.describe()}{net} on {seg.device}", file=sys.stderr)
    return seg


def safe_name(name: str) -> str:
    """A source name usable as a folder name (stream names can hold ':' or '/')."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "stream"


def source_spec(text: str) -> str | int:
    """A bare number is a webcam index; anything else (path, /dev/videoN, URL) goes to open_source as is."""
    return int(text) if text.isdigit() else text


def run_stream(
    cmd: str,
    args: argparse.Namespace,
    source: str | int | Path,
    outputs: Outputs | Callable[[Any], Outputs],
    *,
    mask_path: Path | None = None,
) -> int:
    """Open the source, check the prompt and outputs, run `rtvos.track` into ``outputs``, print the summary.

    ``outputs`` may be a function of the opened source (the default folder is named after it). Cheap checks
    (box syntax, display, address, mask file, output folders) come before the model loads.
    """
    import rtvos
    from rtvos.io import DAVIS_PALETTE, InputError, open_source, read_mask, redact_url
    from rtvos.io.masks import check_mask_size
    from rtvos.io.prompt import MAX_OBJECTS, parse_box, parse_point

    mask_path = mask_path or (Path(args.mask) if args.mask else None)
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    boxes, points = list(args.box or ()), list(getattr(args, "point", None) or ())
    if mask_path is not None and (boxes or points):
        raise InputError("give either --mask or --box/--point, not both")
    parsed = [parse_box(b) for b in boxes]  # syntax now; the frame bounds once the first frame is in hand
    clicks = [parse_point(pt) for pt in points]
    objects = len(parsed) + any(not any(x <= px < x + w and y <= py < y + h for x, y, w, h in parsed)
                                for px, py, _ in clicks)
    if objects > MAX_OBJECTS:
        raise InputError(f"{len(parsed)} --box values make {objects} objects; at most {MAX_OBJECTS} can be tracked "
                         "(ids 1..254 in a palette PNG)")
    first_mask: np.ndarray | None = None
    palette = DAVIS_PALETTE.copy()
    if mask_path is not None:
        first_mask, palette = read_mask(mask_path)

    kwargs = {k: v for k, v in (("transport", args.transport), ("policy", args.policy)) if v is not None}
    src = open_source(source, **kwargs)
    view: Any = None
    lingering: Any = None
    try:
        outs = outputs(src) if callable(outputs) else outputs
        if first_mask is None and not boxes and not points and outs.serve is None:
            raise InputError("a first mask is needed when a SOURCE is given: --mask FIRST.png, --box X,Y,W,H, "
                             "--point X,Y, or --serve to drag a box in the browser")
        if outs.show:
            from rtvos.io.sinks import WindowSink

            WindowSink.check_display()
        size = tuple(src.size)
        if first_mask is not None and size[0] > 0:
            check_mask_size(first_mask, size, f"mask {mask_path}", redact_url(str(source)))
        if first_mask is not None and not first_mask.any():  # would run to the end with empty output
            raise InputError(f"first mask {mask_path} has no object: every pixel is 0 (background)")
        # Everything checkable is checked before the model loads (seconds) and before any folder is made.
        if size[0] > 0:
            for b in boxes:
                parse_box(b, size)  # bounds against the source's frame size
            for pt in points:
                parse_point(pt, size)
        inputs = {f"the mask {mask_path}": mask_path} if mask_path is not None else {}
        if isinstance(source, (str, Path)) and Path(source).exists():
            inputs[f"the input {source}"] = Path(source)
        labels = None if cmd == "segment" else {"video": "--out", "masks": "--masks"}  # the live apps' flags
        _check_output_paths(outs, exist_ok=bool(getattr(args, "exist_ok", False)), inputs=inputs, labels=labels)

        seg = load_segmenter(args)
        if outs.masks is not None:  # only now, with every check passed and the model loaded
            from rtvos.io.sinks import remove_previous_masks

            remove_previous_masks(outs.masks)
        if outs.serve is not None:
            from rtvos.web import LiveView

            view = LiveView(*outs.serve)
            view.start()
            print(f"rtvos {cmd}: {view.describe()}", file=sys.stderr, flush=True)
        sinks = _build_sinks(outs, palette, view, src)
        provider = _first_mask_provider(cmd, args, first_mask, mask_path, source, view)
        # A person watching a file sees it at its own frame rate, not as fast as it decodes.
        pace = (outs.serve is not None or outs.show) and not getattr(args, "no_pace", False)
        tracking = rtvos.track(src, mask=provider, model=seg, sinks=sinks, max_frames=args.max_frames,
                               policy=args.policy, progress="off" if args.quiet else "auto", palette=palette,
                               pace=pace)
        if view is not None:
            from rtvos.io.prompt import prompts_to_mask
            from rtvos.web import to_xywh  # the live view gives x1,y1,x2,y2

            view.on_reanchor = lambda boxes: tracking.pipeline.reanchor(
                lambda f: prompts_to_mask(f.image, [to_xywh(b) for b in boxes]))
        try:
            try:
                for _ in tracking:
                    pass
            except KeyboardInterrupt as stop:  # Ctrl-C/SIGTERM landed here, between two frames: the same
                # normal, flushed end as when it lands inside the pipeline
                tracking.pipeline.stop(stop_reason(stop))
                tracking.close()
            summary = tracking.summary()
            if view is not None and summary.frames and not summary.interrupted and not getattr(args, "exit_at_end", False):
                lingering, view = view, None  # closed once the summary is printed and the user quits
        except BaseException:
            tracking.close()  # flush every sink first: what the line below reports is what stays on disk
            done = tracking.summary().frames
            if done:  # what was really kept, sink by sink (an MP4 that could not be finalised says so)
                kept = "; ".join(line for sk in sinks if sk.name != "live" and (line := sk.describe()))
                print(f"rtvos {cmd}: {done} frame(s) processed before stopping; {kept or 'no file outputs'}",
                      file=sys.stderr)
            raise
    finally:
        src.close()
        if view is not None:
            view.close()
    if summary.frames == 0:
        if summary.interrupted:
            print(f"rtvos {cmd}: stopped before the first frame ({summary.stop_reason})", file=sys.stderr)
            return 0
        raise InputError(f"no frames decoded from {src.name}")
    s = seg.size
    net = f"network input {s[0]}x{s[1]} (short side {seg.size_spec}), " if seg.has_network else ""
    print(summary.describe() + f"\nmodel: {seg.describe()}; {net}{seg.device}")
    for sink in sinks:
        if sink.name != "live" and (line := sink.describe()):
            print(line)
    if lingering is not None:
        _keep_serving(cmd, lingering)
    return 0


def _keep_serving(cmd: str, view: Any) -> None:
    """Keep the page up after the run, so the person watching sees the end, until Ctrl-C (or SIGTERM)."""
    print(f"rtvos {cmd}: the source has ended; the live view stays up at {view.url} until Ctrl-C",
          file=sys.stderr, flush=True)
    try:
        view.finish()
        view.wait_closed()
    except KeyboardInterrupt:
        pass
    finally:
        view.close()


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


def _check_output_paths(outs: Outputs, exist_ok: bool = False, inputs: dict[str, Path] | None = None,
                        labels: dict[str, str] | None = None) -> None:
    """Every output is checked before any work (nothing is made or removed here): each must be creatable (its
    nearest existing ancestor a writable folder), a video must have a suffix FFmpeg can write H.264 to, a mask
    folder already holding results needs ``exist_ok``, and no output may be an input (``inputs``: what it is →
    path) or another output, including a PNG the mask folder would get."""
    from rtvos.io import InputError
    from rtvos.io.sinks import check_output_folder, check_video_path, is_mask_png_name

    names = {"masks": "--out (mask folder)", "video": "the overlay", "jsonl": "--jsonl", "mask_video": "--mask-video"}
    names.update(labels or {})
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
    for key, path in [("masks", outs.masks), *files.items()]:
        if path is None:
            continue
        probe = Path(path).absolute()
        if probe.is_file() and key != "masks":  # an earlier run's file: replaced (its folder must be writable)
            probe = probe.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise InputError(f"cannot create {names[key]} {path}: {probe} is {_kind(probe)}, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise InputError(f"cannot create {names[key]} {path}: {probe} is not writable")


def _build_sinks(outs: Outputs, palette: np.ndarray, view: Any, src: Any) -> list[Sink]:
    from rtvos.io.sinks import JsonlSink, LiveViewSink, MaskSink, MaskVideoSink, VideoSink, WindowSink

    sinks: list[Sink] = []
    # Viewers first: they are what a person watches, so they get each frame before the encoders.
    if view is not None:
        sinks.append(LiveViewSink(view))
    if outs.show:
        sinks.append(WindowSink(title=f"rtvos: {src.name}"))
    if outs.masks is not None:
        sinks.append(MaskSink(outs.masks, palette))
    if outs.video is not None:
        sinks.append(VideoSink(outs.video))
    if outs.mask_video is not None:
        sinks.append(MaskVideoSink(outs.mask_video, outs.mask_video_mode))
    if outs.jsonl is not None:
        sinks.append(JsonlSink(outs.jsonl))
    return sinks


def _first_mask_provider(
    cmd: str, args: argparse.Namespace, mask: np.ndarray | None, mask_path: Path | None, source: Any, view: Any
) -> Callable[[Frame], np.ndarray]:
    """The first mask as a function of the first frame: live sources only know that frame once it arrives."""
    from rtvos.io import InputError, redact_url
    from rtvos.io.masks import check_mask_size
    from rtvos.io.prompt import parse_box, parse_point, prompts_to_mask

    def from_file(frame: Frame) -> np.ndarray:
        assert mask is not None
        check_mask_size(mask, frame.image.shape[:2], f"mask {mask_path}", redact_url(str(source)))
        return mask

    def from_prompts(frame: Frame) -> np.ndarray:
        hw = frame.image.shape[:2]
        boxes = [parse_box(b, hw) for b in args.box or ()]
        points = [parse_point(p, hw) for p in getattr(args, "point", None) or ()]
        return prompts_to_mask(frame.image, boxes, points)

    def from_browser(frame: Frame) -> np.ndarray:
        view.request_box(frame.image)
        print(f"rtvos {cmd}: drag a box around each object at {view.url}, then start (Ctrl-C to quit)",
              file=sys.stderr, flush=True)
        while (boxes := view.wait_boxes(timeout=0.5)) is None:
            if view.closed:
                raise InputError("the live view closed before a box was drawn")
        print(f"rtvos {cmd}: {len(boxes)} object(s) {'; '.join(','.join(map(str, b)) for b in boxes)}, segmenting",
              file=sys.stderr, flush=True)
        from rtvos.web import to_xywh  # the live view gives x1,y1,x2,y2

        return prompts_to_mask(frame.image, [to_xywh(b) for b in boxes])

    if mask is not None:
        return from_file
    if args.box or getattr(args, "point", None):
        return from_prompts
    return from_browser


def run(args: argparse.Namespace) -> int:
    from rtvos.io import InputError

    mask_path = Path(args.mask) if args.mask else None
    if args.source is None:
        source: str | int | Path
        source, sample_mask = sample_paths()
        if mask_path is None and not args.box and not args.point:
            mask_path = sample_mask
        print(f"rtvos segment: no source given, using the shipped sample clip {source}", file=sys.stderr)
        if args.out is None:  # the demo may replace its own earlier results (README's command, run twice)
            args.exist_ok = True
    else:
        source = source_spec(args.source)
        if mask_path is None and not args.box and not args.point and args.serve is None:
            raise InputError("--mask FIRST.png (or --box X,Y,W,H, --point X,Y, or --serve to draw a box) is "
                             "required when a SOURCE is given")
    serve = parse_serve(args.serve) if args.serve is not None else None

    def outputs(src: Any) -> Outputs:
        out = Path(args.out) if args.out else Path("rtvos_out") / safe_name(str(src.name))
        return Outputs(
            video=None if args.no_video else out / "overlay.mp4",
            masks=None if args.no_masks else out,
            jsonl=Path(args.jsonl) if args.jsonl else None,
            mask_video=Path(args.mask_video) if args.mask_video else None,
            mask_video_mode=args.mask_video_mode,
            show=args.show,
            serve=serve,
        )

    return run_stream("segment", args, source, outputs, mask_path=mask_path)
