"""Loss curve (and dev J&F points) from `rtvos train` CSV logs, for the README.

    python -m rtvos.training.plot RUN_DIR [RUN_DIR ...] --out docs/loss_curve.png [--label NAME ...]
        [--copy 0.259 --flow 0.460]

Each RUN_DIR holds `train_log.csv` (step, loss, recon, teacher, ...) and optionally `val_log.csv`
(step, jf, ...). Runs that resume append to the same CSVs, so one folder is one curve.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

__all__ = ["read_log", "plot_runs"]


def read_log(path: Path) -> dict[str, np.ndarray]:
    """CSV columns as float arrays (empty cells → NaN); later rows win on a repeated step (after a resume)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_step = {int(r["step"]): r for r in rows}
    steps = sorted(by_step)
    cols = rows[0].keys() if rows else []
    return {c: np.array([float(by_step[s][c]) if by_step[s][c] not in ("", None) else np.nan for s in steps])
            for c in cols}


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if len(y) < k or k <= 1:
        return y
    return np.convolve(y, np.ones(k) / k, mode="valid")


def plot_runs(runs: list[Path], out: Path, labels: list[str] | None = None, copy: float | None = None,
              flow: float | None = None, smooth: int = 25) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = labels or [r.name for r in runs]
    fig, (ax, tx, bx) = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    for run, label in zip(runs, labels, strict=True):
        log = read_log(run / "train_log.csv")
        k = min(smooth, max(1, len(log["step"]) // 5))
        recon = log.get("recon")
        y = recon if recon is not None and not np.all(np.isnan(recon)) else log["loss"]
        line = ax.plot(log["step"][k - 1:], _smooth(y, k), label=label)[0]
        if "teacher" in log and not np.all(np.isnan(log["teacher"])):
            tx.plot(log["step"][k - 1:], _smooth(log["teacher"], k), color=line.get_color(), label=label)
        val = run / "val_log.csv"
        if val.is_file():
            v = read_log(val)
            bx.plot(v["step"], v["jf"], "o-", color=line.get_color(), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(f"MSE at S/4 (moving mean of {smooth} steps)")
    ax.set_title("reconstruction loss (the paper's)")
    ax.legend(fontsize=7)
    tx.set_xlabel("step")
    tx.set_ylabel("Charbonnier, S/4 pixels")
    tx.set_title("DIS-teacher term (runs that use it)")
    if tx.lines:
        tx.legend(fontsize=7)
    for value, name, style in ((copy, "copy", ":"), (flow, "DIS flow", "--")):
        if value is not None:
            bx.axhline(value, ls=style, color="gray")
            bx.text(bx.get_xlim()[0], value, f" {name} {value:.3f}", va="bottom", fontsize=8, color="gray")
    bx.set_xlabel("step")
    bx.set_ylabel("dev J&F")
    bx.set_title("validation (DAVIS-2016 dev, 10 seq.)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--label", nargs="+", default=None)
    p.add_argument("--copy", type=float, default=None, help="copy-baseline dev J&F (reference line)")
    p.add_argument("--flow", type=float, default=None, help="DIS-flow-baseline dev J&F (reference line)")
    p.add_argument("--smooth", type=int, default=25)
    a = p.parse_args(argv)
    print(plot_runs(a.runs, a.out, a.label, a.copy, a.flow, a.smooth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
