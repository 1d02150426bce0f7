"""Benchmark runner: run methods (rpmnet / copy / flow, optionally + CRF) over a dataset, write DAVIS-format
results, score them and save tables, JSON and a bar chart. The `rtvos eval` CLI is a thin wrapper.

Result layout: ``OUT/<label>/<sequence>/%05d.png`` where label is the method, suffixed ``+crf-<mode>`` when
refined; tables and ``results.json`` go next to the sequence folders of each label.

CRF unary: the Segmenter's propagated scores (`StepResult.scores`, mixed with the uniform distribution so a
one-hot pixel gets 0.8; `crf.unary_from_scores`); for steppers without scores, a fixed-confidence soft mask
(0.8 on the propagated label, 0.2 shared by the others; `crf.soft_unary`). Frame 0 is never refined.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .crf import CRF_MODES, refine_mask
from .datasets import Sequence
from .metrics import DatasetScores, evaluate_dataset

__all__ = [
    "APPEARANCE_METHODS",
    "METHODS",
    "MethodRun",
    "attribute_table",
    "build_method",
    "method_label",
    "object_table",
    "plot_jf_bars",
    "run_benchmark",
    "run_method",
    "score_results",
    "sequence_rows",
    "write_report",
]

# default: `--model` ('default': DIS + the appearance stage) as users run it; rpmnet: a trained RPM-Net network
# ('default': the shipped DEFAULT_NETWORK); rpmnet-paper: the shipped paper-architecture model; flow: DIS through the
# Segmenter's own propagator with no appearance (the baseline the default builds on); flow-plain: the classic
# hard-label, border-replicating DIS baseline, kept for its own numbers.
METHODS: tuple[str, ...] = ("default", "rpmnet", "rpmnet-paper", "copy", "flow", "flow-plain")
APPEARANCE_METHODS = ("default", "rpmnet", "rpmnet-paper")  # the methods that take an appearance mode


class Stepper(Protocol):
    def reset(self) -> None: ...

    def step(self, frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...


class _SegmenterStepper:
    """Adapts `Segmenter.step` (StepResult) to the baselines' `step -> mask` interface."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter
        self._last: Any = None  # the last StepResult

    @property
    def last_scores(self) -> np.ndarray | None:
        """(K+1)×H×W scores of the last step (the CRF's unary), built only when asked for."""
        return None if self._last is None else self._last.scores

    def reset(self) -> None:
        self.segmenter.reset()
        self._last = None

    def step(self, frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        self._last = self.segmenter.step(frame, mask)
        return self._last.mask


def build_method(
    name: str,
    model: Any = "default",
    size: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    mask_resolution: str = "full",
    matching: str = "deformable",
    flow_preset: str = "medium",
    propagation: str = "soft",
    appearance: str | None = None,
    appearance_config: Any = None,
) -> Stepper:
    """A fresh stepper for a method name. ``model`` (default, rpmnet): a `load_model` name or path, or an already
    loaded model; ``appearance`` applies to `APPEARANCE_METHODS`."""
    if name == "copy":
        from .baselines import CopyBaseline

        return CopyBaseline()
    if name == "flow-plain":
        from .baselines import FlowBaseline

        return FlowBaseline(flow_preset)  # DISFlow names the presets when this one is unknown
    from ..segmenter import Segmenter

    if name == "flow":
        return _SegmenterStepper(Segmenter(None, flow_preset=flow_preset, device=device, propagation=propagation,
                                           appearance="none"))
    if name in APPEARANCE_METHODS:
        from ..models.hub import load_model, load_network

        net: Any
        if name == "rpmnet-paper":
            net, size = load_network("rpmnet_r18_paper"), None
        elif not isinstance(model, (str, os.PathLike)):
            net = model
        else:
            net = load_model(model, matching=matching) if name == "default" else load_network(model, matching=matching)
        return _SegmenterStepper(
            Segmenter(net, size=size, device=device, mask_resolution=mask_resolution, backend=backend,
                      propagation=propagation, appearance=appearance, appearance_config=appearance_config)
        )
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")


def method_label(method: str, crf: str = "none") -> str:
    return method if crf == "none" else f"{method}+crf-{crf}"


@dataclass
class MethodRun:
    """Where one method's masks are and how long it took (``None`` when only existing results were scored)."""

    label: str
    results_dir: Path
    frames: int = 0
    method_ms: float = 0.0  # total time in the method's step()
    crf_ms: float = 0.0  # total time in the CRF
    scores: DatasetScores | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ms_per_frame(self) -> float | None:
        return (self.method_ms + self.crf_ms) / self.frames if self.frames else None

    @property
    def crf_ms_per_frame(self) -> float | None:
        return self.crf_ms / self.frames if self.frames else None


def run_method(
    stepper: Stepper,
    sequences: list[Sequence],
    out_dir: str | os.PathLike[str],
    label: str,
    crf: str | Iterable[str] = "none",
    progress: bool = True,
    crf_device: str = "cpu",
) -> list[MethodRun]:
    """Segment every sequence from its first-frame mask; one result folder per CRF mode.

    The method runs once per frame and every requested CRF refines the same raw mask, so "none" and
    "dense"/"fast" rows differ only by the refinement. Timing excludes decoding and PNG writing.
    """
    from ..io import DAVIS_PALETTE, write_mask

    modes = [crf] if isinstance(crf, str) else list(crf)
    for m in modes:
        if m not in CRF_MODES:
            raise ValueError(f"crf must be one of {', '.join(CRF_MODES)}, got {m!r}")
    runs = {m: MethodRun(method_label(label, m), Path(out_dir) / method_label(label, m)) for m in modes}
    total = sum(len(s) for s in sequences)
    bar = _progress(total, f"{label}", progress)
    try:
        for seq in sequences:
            stepper.reset()
            first = seq.first_mask()
            ids = tuple(int(i) for i in np.union1d(np.unique(first), [0]))
            for t, frame in enumerate(seq.frames()):
                start = time.perf_counter()
                mask = stepper.step(frame, first if t == 0 else None)
                spent = (time.perf_counter() - start) * 1000.0
                for m, run in runs.items():
                    run.method_ms += spent
                    run.frames += 1
                    out = mask
                    if m != "none" and t > 0:  # the given mask is ground truth: never refined
                        c0 = time.perf_counter()
                        scores = getattr(stepper, "last_scores", None)  # soft propagation's, else fixed 0.8
                        out = refine_mask(frame, mask, m, object_ids=ids, device=crf_device, scores=scores)
                        run.crf_ms += (time.perf_counter() - c0) * 1000.0
                    write_mask(run.results_dir / seq.name / f"{t:05d}.png", out, DAVIS_PALETTE)
                bar.update(1)
    finally:
        bar.close()
    return list(runs.values())


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False, dynamic_ncols=True)


def score_results(
    sequences: list[Sequence], results_dir: str | os.PathLike[str], workers: int = 0
) -> DatasetScores:
    """Score ``results_dir/<sequence>/<frame stem>.png`` against the ground truth (one-line error if missing)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    items = []
    for seq in sequences:
        preds: list[Path] = []
        for i, frame_path in enumerate(seq.frame_paths):
            cands = [root / seq.name / f"{frame_path.stem}.png", root / seq.name / f"{i:05d}.png"]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                if seq.gt_paths[i] is None or i == 0:
                    preds.append(cands[0])  # not scored: never read
                    continue
                raise FileNotFoundError(f"missing prediction for {seq.name} frame {i}: {cands[0]}")
            preds.append(hit)
        items.append((seq.name, seq.gt_masks(), preds, seq.object_ids))
    skip_last = not all(s.score_last_frame for s in sequences)
    if any(s.score_last_frame for s in sequences) and skip_last:
        warnings.warn("sequences disagree on scoring the last frame; skipping it for all", stacklevel=2)
    return evaluate_dataset(items, workers=workers, skip_last=skip_last)


# -- tables -------------------------------------------------------------------------------------------------
def sequence_rows(scores: DatasetScores) -> list[dict[str, Any]]:
    """One row per sequence: mean over its objects of J, F and J&F."""
    return [{"Sequence": s.name, "J-Mean": s.mean_j, "F-Mean": s.mean_f, "J&F-Mean": s.mean_jf} for s in scores.sequences]


def object_table(scores: DatasetScores) -> list[dict[str, Any]]:
    """One row per object with mean / recall / decay of J and F."""
    rows = []
    for seq, row, obj in scores.object_rows():
        jm, jr, jd = (float(v[row]) for v in seq.stats("J"))
        fm, fr, fd = (float(v[row]) for v in seq.stats("F"))
        rows.append({"Sequence": seq.name, "Object": obj, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
                     "F-Mean": fm, "F-Recall": fr, "F-Decay": fd})
    return rows


def attribute_table(scores: DatasetScores, sequences: list[Sequence]) -> dict[str, dict[str, float]]:
    """Mean J and F over the sequences that carry each DAVIS attribute (``attributes`` list in db_info)."""
    by_name = {s.name: s for s in sequences}
    acc: dict[str, list[tuple[float, float]]] = {}
    for sc in scores.sequences:
        seq = by_name.get(sc.name)
        if seq is None:
            continue
        attrs = seq.attributes.get("attributes", [])
        if isinstance(attrs, str):
            attrs = [a.strip() for a in attrs.split(",") if a.strip()]
        for a in attrs or []:
            acc.setdefault(str(a), []).append((sc.mean_j, sc.mean_f))
    return {
        a: {"J": float(np.nanmean([v[0] for v in vals])), "F": float(np.nanmean([v[1] for v in vals])), "sequences": len(vals)}
        for a, vals in sorted(acc.items())
    }


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.3f}" if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else v))
                        for k, v in r.items()})


def run_summary(run: MethodRun, sequences: list[Sequence] | None = None) -> dict[str, Any]:
    """JSON-ready {"global", "sequences", "ms_per_frame", ...} for one scored run (fractions, NaN → null)."""
    assert run.scores is not None
    out = run.scores.to_json()
    out["ms_per_frame"] = run.ms_per_frame
    out["crf_ms_per_frame"] = run.crf_ms_per_frame
    out["frames"] = run.frames
    if sequences is not None:
        attrs = attribute_table(run.scores, sequences)
        if attrs:
            out["attributes"] = attrs
    out.update(run.extra)
    return out


def write_report(run: MethodRun, set_name: str | None, sequences: list[Sequence] | None = None) -> dict[str, Any]:
    """Official CSVs + per-sequence and per-object CSVs + results.json into the run's folder."""
    assert run.scores is not None
    d = run.results_dir
    run.scores.write_csv(d, set_name)
    suffix = f"-{set_name}" if set_name else ""
    _write_rows(d / f"sequence_results{suffix}.csv", sequence_rows(run.scores))
    _write_rows(d / f"per-object_results{suffix}.csv", object_table(run.scores))
    summary = run_summary(run, sequences)
    (d / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def plot_jf_bars(runs: list[MethodRun], path: str | os.PathLike[str], title: str = "J&F per sequence") -> Path:
    """Grouped bar chart of J&F per sequence, one colour per method (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    scored = [r for r in runs if r.scores is not None]
    if not scored:
        raise ValueError("nothing scored to plot")
    names = [s.name for s in scored[0].scores.sequences]  # type: ignore[union-attr]
    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) * max(1, len(scored)) / 2 + 2), 4), dpi=100)
    x = np.arange(len(names))
    for i, r in enumerate(scored):
        per = {s.name: s.mean_jf for s in r.scores.sequences}  # type: ignore[union-attr]
        g = r.scores.global_table()["J&F-Mean"]  # type: ignore[union-attr]
        ax.bar(x + (i - (len(scored) - 1) / 2) * width, [per.get(n, np.nan) for n in names], width,
               label=f"{r.label} ({g:.3f})")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("J&F")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def run_benchmark(
    sequences: list[Sequence],
    out_dir: str | os.PathLike[str],
    methods: Iterable[str] = ("rpmnet",),
    crf: Iterable[str] = ("none",),
    set_name: str | None = None,
    workers: int = 0,
    progress: bool = True,
    method_factory: Callable[[str], Stepper] | None = None,
    crf_device: str = "cpu",
) -> list[MethodRun]:
    """Run, score and report every method × CRF mode; returns the scored runs (reports written per run)."""
    if not sequences:
        raise ValueError("the dataset has no sequences")
    factory = method_factory or build_method
    runs: list[MethodRun] = []
    for name in methods:
        runs += run_method(factory(name), sequences, out_dir, name, list(crf), progress, crf_device)
    for run in runs:
        run.scores = score_results(sequences, run.results_dir, workers)
        write_report(run, set_name, sequences)
    return runs
