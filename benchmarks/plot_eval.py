"""A readable per-sequence J&F chart from an `rtvos eval --json` summary, for a chosen subset of methods.

    python benchmarks/plot_eval.py docs/eval_dev.json --methods default flow-ultrafast-fine rpmnet \
        rpmnet-paper flow-medium flow-plain-medium copy --out docs/jf_per_sequence_dev.png
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary")
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d = json.load(open(args.summary))
    methods = d["methods"]
    missing = [m for m in args.methods if m not in methods]
    if missing:
        raise SystemExit(f"not in {args.summary}: {', '.join(missing)} (has {', '.join(methods)})")
    seqs = list(methods[args.methods[0]]["sequences"])
    fig = Figure(figsize=(13, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(args.methods)
    cmap = [f"C{i}" for i in range(10)]
    for i, m in enumerate(args.methods):
        vals = [methods[m]["sequences"][s]["J&F"] or 0.0 for s in seqs]
        ax.bar(np.arange(len(seqs)) + (i - (len(args.methods) - 1) / 2) * width, vals, width,
               label=f"{m} ({methods[m]['global']['J&F']:.3f})", color=cmap[i % 10])
    ax.set_xticks(np.arange(len(seqs)), seqs, rotation=20, fontsize=8)
    ax.set_ylabel("J&F")
    ax.set_ylim(0, 1)
    ax.set_title(f"J&F per sequence ({d.get('dataset', '')} {d.get('set', '')}); global mean in the legend")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
