"""`rtvos segment [SOURCE] --mask FIRST.png --out DIR`: masks as DAVIS PNGs plus an overlay MP4.

Decoding and segmentation stay on the main thread; PNG and H.264 encoding run on a writer thread behind a
bounded queue, so the model never waits for the encoder and memory stays flat.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(sub: Any) -> None:
    p = sub.add_parser("segment", help="segment a video file or a folder of frames from a first-frame mask")
    p.add_argument("source", nargs="?", help="video file or folder of frames (default: the shipped sample clip)")
    p.add_argument("--mask", help="first-frame mask PNG (palette ids, or 0/255); required with SOURCE")
    p.add_argument("--out", help="output folder (default: ./rtvos_out/<source name>)")
    p.add_argument("--model", default="default", help="'default', a registered model name, or a checkpoint path")
    p.add_argument("--size", type=int, default=None, help="model input size S, multiple of 64 (default: model's)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--mask-resolution", choices=("full", "model"), default="full",
                   help="propagate masks at frame resolution (default) or at S/4 as in the paper")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--no-video", action="store_true", help="do not write the overlay MP4")
    p.add_argument("--no-masks", action="store_true", help="do not write per-frame PNG masks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def sample_paths() -> tuple[Path, Path]:
    assets = resources.files("rtvos") / "assets"
    return Path(str(assets / "sample.mp4")), Path(str(assets / "sample_mask.png"))


class _Writer(threading.Thread):
    """Consumes (index, frame, mask); the first error is kept and re-raised on the main thread."""

    def __init__(self, out: Path, palette: np.ndarray, fps: float, masks: bool, video: bool) -> None:
        super().__init__(name="rtvos-writer", daemon=True)
        from rtvos.io import VideoWriter

        self.queue: queue.Queue[tuple[int, np.ndarray, np.ndarray] | None] = queue.Queue(maxsize=8)
        self.out, self.palette, self.masks = out, palette, masks
        self.video = VideoWriter(out / "overlay.mp4", fps=fps) if video else None
        self.error: BaseException | None = None
        self.written = 0

    def run(self) -> None:
        from rtvos.io import overlay, write_mask

        try:
            while (item := self.queue.get()) is not None:
                index, frame, mask = item
                if self.masks:
                    write_mask(self.out / f"{index:05d}.png", mask, self.palette)
                if self.video is not None:
                    self.video.write(overlay(frame, mask, self.palette))
                self.written += 1
        except BaseException as e:  # surfaced by put()/finish()
            self.error = e
        finally:
            if self.video is not None:
                self.video.close()

    def put(self, item: tuple[int, np.ndarray, np.ndarray]) -> None:
        while self.is_alive():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self.finish()

    def finish(self) -> None:
        if self.is_alive():
            self.queue.put(None)
            self.join()
        if self.error is not None:
            raise self.error


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    import rtvos
    from rtvos.io import InputError, open_source, read_mask
    from rtvos.models import RandomWeightsWarning

    if args.source is None:
        source, mask_path = sample_paths()
        if args.mask:
            mask_path = Path(args.mask)
        print(f"rtvos segment: no source given, using the shipped sample clip {source}", file=sys.stderr)
    else:
        source = args.source
        if not args.mask:
            raise InputError("--mask FIRST.png is required when a SOURCE is given")
        mask_path = Path(args.mask)
    first_mask, palette = read_mask(mask_path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = rtvos.load_model(args.model)
    if any(issubclass(w.category, RandomWeightsWarning) for w in caught) or not model.meta.get("trained"):
        print("!" * 100 + f"\n!! WARNING: {model.meta.get('source')}: the model is NOT TRAINED; masks are "
              "meaningless (plumbing only).\n" + "!" * 100, file=sys.stderr)
    seg = rtvos.Segmenter(model, size=args.size, device=torch.device(args.device), mask_resolution=args.mask_resolution)
    size = seg.size[0] if seg.size[0] == seg.size[1] else seg.size

    src = open_source(source)
    out = Path(args.out) if args.out else Path("rtvos_out") / src.name
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out, palette, src.fps, masks=not args.no_masks, video=not args.no_video)
    writer.start()
    n = 0
    t0 = time.perf_counter()
    model_ms: list[float] = []
    failure: BaseException | None = None
    # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs, pipes).
    bar = tqdm(total=src.num_frames, unit="frame", disable=True if args.quiet else None, file=sys.stderr)
    try:
        with src:
            for frame in src:
                if args.max_frames is not None and n >= args.max_frames:
                    break
                if n == 0 and frame.image.shape[:2] != first_mask.shape:
                    raise InputError(
                        f"mask {mask_path} is {first_mask.shape[1]}x{first_mask.shape[0]} but the frames of "
                        f"{source} are {frame.image.shape[1]}x{frame.image.shape[0]}"
                    )
                res = seg.step(frame.image, first_mask if n == 0 else None)
                model_ms.append(res.total_ms)
                writer.put((n, frame.image, res.mask))
                n += 1
                bar.update(1)
    except BaseException as e:  # flush what was produced before reporting
        failure = e
    finally:
        bar.close()
        try:
            writer.finish()
        except BaseException as e:
            failure = failure or e
    if failure is not None:
        if n:
            print(f"rtvos segment: wrote {writer.written} frame(s) to {out} before stopping", file=sys.stderr)
        raise failure
    if n == 0:
        raise InputError(f"no frames decoded from {source}")
    wall = time.perf_counter() - t0
    med = float(np.median(model_ms[1:] or model_ms))
    print(f"segmented {n} frames of {src.name} in {wall:.1f} s ({n / wall:.1f} fps end to end, "
          f"model step median {med:.1f} ms at S={size})")
    if not args.no_masks:
        print(f"masks:   {out}/%05d.png")
    if not args.no_video:
        print(f"overlay: {out / 'overlay.mp4'}")
    return 0
