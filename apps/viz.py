"""`rtvos viz embed|sampling|similarity`: the paper's analysis figures as PNGs."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(sub: Any) -> None:
    p = sub.add_parser("viz", help="figures: embedding PCA, D1–D3 sampling locations, similarity per variant")
    vs = p.add_subparsers(dest="viz_command", metavar="FIGURE", required=True)

    e = vs.add_parser("embed", help="embedding of a frame projected to RGB by PCA")
    e.add_argument("frame", help="image file")
    _common(e, "embed.png")

    s = vs.add_parser("sampling", help="composed D3→D2→D1 sampling locations of one pixel over two frames")
    s.add_argument("ref", help="reference (previous) frame image")
    s.add_argument("tar", help="target (current) frame image")
    s.add_argument("--pixel", type=int, nargs=2, metavar=("Y", "X"), default=None,
                   help="pixel in frame coordinates (default: the centre)")
    _common(s, "sampling.png")

    c = vs.add_parser("similarity", help="mean cosine similarity at the sampling locations per matching variant")
    c.add_argument("ref")
    c.add_argument("tar")
    c.add_argument("--checkpoints", nargs="*", default=None,
                   help="checkpoints to compare (default: every variant of --model's backbone, random weights)")
    c.add_argument("--grid", type=int, default=6, help="pixels per side of the evaluated lattice")
    _common(c, "similarity.png")
    p.set_defaults(func=run)


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--model", default="default", help="a network: 'default' (the default network), a registered name or a checkpoint path")
    p.add_argument("--size", type=int, default=256, help="model input size S (multiple of 64)")
    p.add_argument("--out", default=default_out, help=f"output PNG (default {default_out})")


def _read(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _load(spec: str, matching: str = "deformable") -> Any:
    from rtvos.models import load_network

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_network(spec, matching=matching)
    for w in caught:
        print(f"warning: {w.message}")
    return model


def run(args: argparse.Namespace) -> int:
    from rtvos import viz

    if args.size <= 0 or args.size % 64:
        raise ValueError(f"--size must be a positive multiple of 64, got {args.size}")
    if args.viz_command == "embed":
        img = viz.embedding_pca(_load(args.model), _read(args.frame), args.size)
        print(f"wrote {viz.save_rgb(img, args.out)}")
        return 0
    ref, tar = _read(args.ref), _read(args.tar)
    if ref.shape != tar.shape:
        raise ValueError(f"frames differ in size: {ref.shape[:2]} vs {tar.shape[:2]}")
    if args.viz_command == "sampling":
        model = _load(args.model)
        if model.config.matching != "deformable":
            print(f"note: {model.config.matching} matching has no learned offsets; showing its fixed taps")
        _, _, convs = viz.matching_inputs(model, ref, tar, args.size)
        gh, gw = convs[0][1].shape[-2:]
        h, w = tar.shape[:2]
        py, px = args.pixel if args.pixel is not None else (h // 2, w // 2)
        if not (0 <= py < h and 0 <= px < w):
            raise ValueError(f"--pixel {py} {px} is outside the {h}×{w} frame")
        gp = (min(gh - 1, int(py * gh / h)), min(gw - 1, int(px * gw / w)))
        levels = viz.sampling_locations(convs, gp)
        img = viz.draw_sampling_locations(ref, tar, levels, gp, (gh, gw))
        print(f"wrote {viz.save_rgb(img, args.out)}  ({', '.join(str(len(lv)) for lv in levels)} points per layer)")
        return 0
    # similarity
    if args.grid < 1:
        raise ValueError(f"--grid must be >= 1, got {args.grid}")
    values: dict[str, float] = {}
    if args.checkpoints:
        for ck in args.checkpoints:
            m = _load(ck)
            values[f"{Path(ck).stem} ({m.config.matching})"] = viz.sampling_similarity(m, ref, tar, args.size, args.grid)
    else:
        from rtvos.models import MATCHING_VARIANTS

        base = "rpmnet_r18" if args.model == "default" else args.model
        for variant in MATCHING_VARIANTS:
            values[variant] = viz.sampling_similarity(_load(base, variant), ref, tar, args.size, args.grid)
    for k, v in values.items():
        print(f"{k:<32} {v:.4f}")
    print(f"wrote {viz.plot_similarity_bars(values, args.out)}")
    return 0
