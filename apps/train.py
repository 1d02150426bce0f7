"""`rtvos train DATA [DATA ...] --out DIR`: self-supervised RPM-Net training (paper recipe by default).

Multi-process: `torchrun --nproc_per_node N -m rtvos train ...` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="self-supervised training on videos / frame folders")
    p.add_argument("data", nargs="+", help="video files, folders of videos, frame folders or a DAVIS root")
    p.add_argument("--out", required=True, help="output folder: checkpoints, train_log.csv")
    p.add_argument("--model", default="rpmnet_r18", help="registered model name (default rpmnet_r18)")
    p.add_argument("--matching", default="deformable", help="matching head variant (default deformable)")
    p.add_argument("--size", type=int, default=256, help="input size S, multiple of 64 (default 256)")
    p.add_argument("--batch", type=int, default=8, help="pairs per step per process (default 8)")
    p.add_argument("--iters", type=int, default=1000, help="total optimisation steps (default 1000)")
    p.add_argument("--lr", type=float, default=1e-3, help="base learning rate, poly-decayed (default 1e-3)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gap", type=int, default=5, help="frames between reference and target (default 5)")
    g.add_argument("--gap-range", type=int, nargs=2, metavar=("MIN", "MAX"), help="random gap in [MIN, MAX]")
    p.add_argument("--workers", type=int, default=2, help="data-loader worker processes (default 2)")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps (and at the end)")
    p.add_argument("--log-every", type=int, default=1, help="CSV row every N steps (default 1)")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest checkpoint in --out")
    p.add_argument("--exclude", nargs="+", default=[], metavar="SUBSTR",
                   help="skip clips whose path contains any of these substrings (e.g. DAVIS val names)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA when usable, else cpu), cpu or cuda")
    p.add_argument("--cache-mb", type=int, default=1024, help="per-worker decoded-video cache (default 1024)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="end this run after STEP (checkpointed), keeping the --iters schedule; continue with --resume")
    b = p.add_argument_group("beyond the paper (label-free)")
    b.add_argument("--teacher", choices=("none", "dis"), default="none",
                   help="distil OpenCV DIS optical flow (classical, unsupervised) into f4 (default none)")
    b.add_argument("--teacher-weight", type=float, default=0.1, help="weight of the teacher's robust L1 (default 0.1)")
    b.add_argument("--teacher-preset", choices=("ultrafast", "fast", "medium"), default="medium",
                   help="DIS preset (default medium)")
    b.add_argument("--no-teacher-fb", dest="teacher_fb", action="store_false",
                   help="do not mask the teacher by its forward-backward consistency")
    b.add_argument("--teacher-loss", choices=("l1", "l2"), default="l1",
                   help="robust L1 (Charbonnier) or squared end-point error to the teacher (default l1)")
    b.add_argument("--optim", choices=("sgd", "adamw"), default="sgd", help="optimiser (default sgd, the paper's)")
    b.add_argument("--color", choices=("rgb", "lab"), default="rgb", help="reconstruction colour space (default rgb)")
    v = p.add_argument_group("validation (annotated dev set; scored, never trained on)")
    v.add_argument("--val-root", default=None, help="DAVIS-layout root; enables validation and best.pt")
    v.add_argument("--val-set", default="dev", help="sequence set (default dev)")
    v.add_argument("--val-dataset", default="davis2017", help="dataset reader (default davis2017)")
    v.add_argument("--val-every", type=int, default=0, help="validate every N steps (0: at the end only)")
    v.add_argument("--val-size", type=int, default=None, help="Segmenter input size (default: --size)")
    v.add_argument("--val-max-frames", type=int, default=None, help="score only the first K frames per sequence")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtvos.backends import resolve_device
    from rtvos.training import TrainConfig, train

    cfg = TrainConfig(
        data=list(args.data), out=args.out, model=args.model, matching=args.matching, size=args.size,
        batch=args.batch, iters=args.iters, lr=args.lr, gap=args.gap,
        gap_range=tuple(args.gap_range) if args.gap_range else None, workers=args.workers,
        ckpt_every=args.ckpt_every, log_every=args.log_every, resume=args.resume, exclude=list(args.exclude),
        seed=args.seed, device=str(resolve_device(args.device)), cache_mb=args.cache_mb, quiet=args.quiet, stop_at=args.stop_at,
        teacher=args.teacher, teacher_weight=args.teacher_weight, teacher_preset=args.teacher_preset,
        teacher_fb=args.teacher_fb, teacher_loss=args.teacher_loss, color=args.color, optim=args.optim, val_root=args.val_root, val_set=args.val_set,
        val_dataset=args.val_dataset, val_every=args.val_every, val_size=args.val_size,
        val_max_frames=args.val_max_frames,
    )
    res = train(cfg)
    if res.checkpoint is not None:
        print(f"checkpoint: {res.checkpoint}")
    if res.val:
        print(f"dev J&F at step {res.val[-1]['step']:.0f}: {res.val[-1]['jf']:.4f}")
    return 0
