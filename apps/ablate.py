"""`rtvos ablate CKPT_DIR ROOT --set NAME`: the ablation grid (backbones × matching variants, Table 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ablate", help="score a folder of checkpoints as the backbone × matching grid")
    p.add_argument("checkpoints", help="folder of rtvos checkpoints (config read from each file)")
    p.add_argument("root", help="dataset root")
    p.add_argument("--set", dest="set_name", default=None)
    p.add_argument("--dataset", default="davis2017")
    p.add_argument("--out", default="rtvos_ablate", help="results, ablation.csv and ablation.md go here")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="auto", help="auto (CUDA when usable, else cpu), cpu or cuda:N")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--metric", choices=("J", "F", "J&F"), default="J", help="metric of the markdown grid")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtvos.eval import ablation_markdown, discover_checkpoints, load_dataset, run_ablation, write_ablation_csv

    if args.size <= 0 or args.size % 64:
        raise ValueError(f"--size must be a positive multiple of 64, got {args.size}")
    entries = discover_checkpoints(args.checkpoints)
    sequences = load_dataset(args.root, args.dataset, args.set_name)
    print(f"{len(entries)} checkpoints: " + ", ".join(f"r{e.depth}/{e.matching}" for e in entries))
    from rtvos.backends import resolve_device

    run_ablation(entries, sequences, args.out, args.size, str(resolve_device(args.device)), args.workers, progress=not args.quiet)
    out = Path(args.out)
    md = ablation_markdown(entries, args.metric)
    (out / "ablation.md").write_text(md + "\n")
    write_ablation_csv(entries, out / "ablation.csv")
    print(md)
    print(f"\nwrote {out / 'ablation.csv'} and {out / 'ablation.md'}")
    return 0
