"""The paper's analyses over trained models: the ablation grid (backbones × matching variants, Table 2) and
J per DAVIS attribute. Checkpoints are discovered by reading their stored config, not their file names.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.matching import MATCHING_VARIANTS
from .datasets import Sequence
from .runner import MethodRun, attribute_table, run_method, score_results

__all__ = ["AblationEntry", "discover_checkpoints", "run_ablation", "ablation_markdown", "write_ablation_csv",
           "attribute_table"]


@dataclass
class AblationEntry:
    path: Path
    depth: int
    matching: str
    scores: dict[str, float] | None = None  # {"J", "F", "J&F", "ms_per_frame"}


def discover_checkpoints(folder: str | os.PathLike[str]) -> list[AblationEntry]:
    """Every readable rtvos checkpoint (*.pt, *.pth, recursive) with its backbone depth and matching variant.

    Files that are not rtvos checkpoints are skipped; duplicates of one (depth, variant) keep the first path
    in sorted order. Raises when the folder holds none.
    """
    from ..models.checkpoint import CheckpointError, read_checkpoint

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {root}")
    seen: dict[tuple[int, str], AblationEntry] = {}
    for p in sorted([*root.rglob("*.pt"), *root.rglob("*.pth")]):
        try:
            cfg = read_checkpoint(p)["config"]
        except CheckpointError:
            continue
        key = (int(cfg.get("depth", 101)), str(cfg.get("matching", "deformable")))
        seen.setdefault(key, AblationEntry(p, *key))
    if not seen:
        raise ValueError(f"no rtvos checkpoints (*.pt, *.pth) under {root}")
    return sorted(seen.values(), key=lambda e: (_variant_rank(e.matching), e.depth))


def _variant_rank(v: str) -> int:
    return MATCHING_VARIANTS.index(v) if v in MATCHING_VARIANTS else len(MATCHING_VARIANTS)


def run_ablation(
    entries: list[AblationEntry],
    sequences: list[Sequence],
    out_dir: str | os.PathLike[str],
    size: int = 512,
    device: str = "cpu",
    workers: int = 0,
    progress: bool = True,
    stepper_factory: Callable[[AblationEntry], Any] | None = None,
) -> list[AblationEntry]:
    """Run and score every checkpoint on the sequences; results under ``out_dir/r<depth>-<variant>/``."""
    from .runner import build_method

    for e in entries:
        label = f"r{e.depth}-{e.matching}"
        stepper = stepper_factory(e) if stepper_factory else build_method("rpmnet", str(e.path), size, device, backend="eager", appearance="none")
        (run,) = run_method(stepper, sequences, out_dir, label, "none", progress)
        run.scores = score_results(sequences, run.results_dir, workers)
        g = run.scores.global_table()
        e.scores = {"J": g["J-Mean"], "F": g["F-Mean"], "J&F": g["J&F-Mean"], "ms_per_frame": run.ms_per_frame or math.nan}
    return entries


def _cell(e: AblationEntry | None, metric: str) -> str:
    if e is None or e.scores is None or math.isnan(e.scores[metric]):
        return "–"
    return f"{100 * e.scores[metric]:.1f}"


def ablation_markdown(entries: list[AblationEntry], metric: str = "J") -> str:
    """Table 2 layout: one row per matching variant, one column per ResNet backbone, ``metric`` in %."""
    depths = sorted({e.depth for e in entries})
    variants = sorted({e.matching for e in entries}, key=_variant_rank)
    grid = {(e.matching, e.depth): e for e in entries}
    lines = [f"| matching ({metric}, %) | " + " | ".join(f"ResNet-{d}" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(_cell(grid.get((v, d)), metric) for d in depths) + " |")
    return "\n".join(lines)


def write_ablation_csv(entries: list[AblationEntry], path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["backbone", "matching", "J", "F", "J&F", "ms_per_frame", "checkpoint"])
        for e in entries:
            s = e.scores or {}
            w.writerow([f"resnet{e.depth}", e.matching, *(f"{s.get(k, math.nan):.4f}" for k in ("J", "F", "J&F")),
                        f"{s.get('ms_per_frame', math.nan):.1f}", str(e.path)])
    return out


def attribute_markdown(per_method: dict[str, dict[str, dict[str, float]]]) -> str:
    """J per attribute (rows) for each method (columns), in %; empty string when no attribute is known."""
    attrs = sorted({a for t in per_method.values() for a in t})
    if not attrs:
        return ""
    methods = list(per_method)
    lines = ["| attribute | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for a in attrs:
        cells = [f"{100 * per_method[m][a]['J']:.1f}" if a in per_method[m] else "–" for m in methods]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_attributes(runs: list[MethodRun], sequences: list[Sequence]) -> dict[str, dict[str, dict[str, float]]]:
    return {r.label: attribute_table(r.scores, sequences) for r in runs if r.scores is not None}
