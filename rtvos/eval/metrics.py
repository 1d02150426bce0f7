"""DAVIS region (J) and boundary (F) measures, matching the official davis2017-evaluation tool.

Numbers produced here are meant to be comparable with published DAVIS tables, so every convention follows
the official semi-supervised evaluation (``davis2017/metrics.py``, ``evaluation.py``, ``utils.py`` and
``evaluation_method.py``), even where it is debatable:

* J is the IoU of one object's masks; a frame where both masks are empty scores 1.
* F is the boundary F-measure: 1-px boundary maps (Martin's ``seg2bmap``), matched within
  ``ceil(0.008 * image diagonal)`` px by dilating with a skimage-style ``disk``; empty/empty scores 1,
  exactly one empty side scores 0.
* Per sequence, the first and the last frame are not scored; objects are ids ``1..max(first GT mask)``;
  the void label 255 in the ground truth counts as background (the official semi-supervised path passes
  no void mask), and a predicted object that is absent is an empty mask.
* Per object: mean, recall (fraction of frames > 0.5) and decay (mean of the first minus the last of four
  overlapping, ``linspace``-placed bins); the global J&F is ``(mean_J + mean_F) / 2`` over all objects of
  all sequences.

Deviations, all on inputs the official tool refuses or mishandles: predicted ids that are not ground-truth
objects are ignored (the official tool aborts; ``strict=True`` raises instead), decay bins use int64 indices
(the official uint8 cast wraps past 256 frames), frames whose ground truth is ``None`` (sparse annotation)
are skipped, and global means ignore NaN (objects with no scored frame).
"""

from __future__ import annotations

import csv
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

__all__ = [
    "BOUND_TH",
    "VOID_LABEL",
    "GLOBAL_COLUMNS",
    "DatasetScores",
    "SequenceScores",
    "boundary_f",
    "boundary_radius",
    "db_statistics",
    "disk",
    "evaluate_dataset",
    "evaluate_sequence",
    "jaccard",
    "seg2bmap",
]

#: Boundary tolerance as a fraction of the image diagonal (values >= 1 are taken as pixels).
BOUND_TH: float = 0.008
#: Ground-truth label the DAVIS tool maps to background in the semi-supervised task.
VOID_LABEL: int = 255
#: Column order of the official ``global_results-<set>.csv``.
GLOBAL_COLUMNS: tuple[str, ...] = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

MaskInput = Union[np.ndarray, str, "os.PathLike[str]", None]


# -- per-frame measures ---------------------------------------------------------------------------------------
def disk(radius: float) -> np.ndarray:
    """Same footprint as ``skimage.morphology.disk(radius)`` (strict radius), as the official F uses it."""
    r = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(r, r)
    return ((xx**2 + yy**2) <= radius**2).astype(np.uint8)


def boundary_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> float:
    """Match tolerance in px; official: ``bound_th`` if >= 1 else ``ceil(bound_th * ||(H, W)||)``."""
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(tuple(shape[-2:]))))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """1-px boundary map(s) of binary mask(s) (..., H, W), offset half a pixel towards the origin.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour (outside the
    image counts as background, except along the last row/column, where only E resp. S are compared).
    """
    seg = np.asarray(seg).astype(bool, copy=False)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]
    s[..., :-1, :] = seg[..., 1:, :]
    se[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two binary masks; 1.0 when both are empty (official convention)."""
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    union = np.count_nonzero(gt | pred)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred) / union


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two binary masks (official ``f_measure``)."""
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"need two H×W masks of one shape, got {gt.shape} and {pred.shape}")
    fp = disk(boundary_radius(gt.shape, bound_th))
    return _f_from_bmaps(seg2bmap(gt), seg2bmap(pred), fp)


def _f_from_bmaps(gt_b: np.ndarray, fg_b: np.ndarray, footprint: np.ndarray) -> float:
    n_gt = int(np.count_nonzero(gt_b))
    n_fg = int(np.count_nonzero(fg_b))
    if n_gt == 0 or n_fg == 0:
        # official: P,R = (1,1) both empty -> F=1; (1,0) or (0,1) -> F=0
        return 1.0 if n_gt == n_fg else 0.0
    # Dilation only matters near boundary pixels, so work in their bounding box padded by the footprint:
    # identical to dilating the full image (OpenCV's default border never adds foreground).
    pad = footprint.shape[0]
    both = gt_b | fg_b
    rows = np.flatnonzero(both.any(axis=1))
    cols = np.flatnonzero(both.any(axis=0))
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, both.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, both.shape[1])
    g = gt_b[y0:y1, x0:x1]
    f = fg_b[y0:y1, x0:x1]
    g_dil = cv2.dilate(g.view(np.uint8), footprint).view(bool)
    f_dil = cv2.dilate(f.view(np.uint8), footprint).view(bool)
    precision = np.count_nonzero(f & g_dil) / float(n_fg)
    recall = np.count_nonzero(g & f_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# -- statistics ---------------------------------------------------------------------------------------------
def _decay_edges(n: int) -> np.ndarray:
    # official: ids = round(linspace(1, n, 5) + 1e-10) - 1; bin i = v[ids[i] : ids[i+1] + 1] (bins overlap)
    return (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)


def db_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, recall (> 0.5) and decay along the last axis (official ``utils.db_statistics``, vectorised).

    Returns NaN for series without any frame.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[-1]
    lead = v.shape[:-1]
    if n == 0:
        nan = np.full(lead, np.nan)
        return nan, nan.copy(), nan.copy()
    with np.errstate(invalid="ignore"):
        recall = (v > 0.5).mean(axis=-1)  # NaN frames count as misses, as in the official nanmean(v > 0.5)
    ids = _decay_edges(n)
    first = _nanmean_last(v[..., ids[0] : ids[1] + 1])
    last = _nanmean_last(v[..., ids[3] : ids[4] + 1])
    return _nanmean_last(v), recall, first - last


def _nanmean_last(v: np.ndarray) -> np.ndarray:
    """np.nanmean over the last axis without the all-NaN warning."""
    valid = ~np.isnan(v)
    cnt = valid.sum(axis=-1)
    total = np.where(valid, v, 0).sum(axis=-1)
    return np.where(cnt > 0, total / np.maximum(cnt, 1), np.nan)


# -- sequences ----------------------------------------------------------------------------------------------
@dataclass
class SequenceScores:
    """Per-frame J and F of one sequence, (objects × scored frames), plus the official per-object statistics."""

    name: str
    object_ids: list[int]
    frame_indices: np.ndarray  # indices (into the sequence) of the scored frames
    J: np.ndarray  # (K, T') float64
    F: np.ndarray  # (K, T') float64
    _stats: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def stats(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, recall, decay) per object for metric "J" or "F"."""
        if metric not in ("J", "F"):
            raise ValueError(f"metric must be 'J' or 'F', got {metric!r}")
        if metric not in self._stats:
            self._stats[metric] = db_statistics(self.J if metric == "J" else self.F)
        return self._stats[metric]

    @property
    def j_mean(self) -> np.ndarray:
        return self.stats("J")[0]

    @property
    def f_mean(self) -> np.ndarray:
        return self.stats("F")[0]

    @property
    def mean_j(self) -> float:
        """Sequence J: mean over objects of their J-Mean."""
        return _nanmean(self.j_mean)

    @property
    def mean_f(self) -> float:
        return _nanmean(self.f_mean)

    @property
    def mean_jf(self) -> float:
        return (self.mean_j + self.mean_f) / 2.0


def _nanmean(x: Iterable[float] | np.ndarray) -> float:
    a = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def _as_mask(m: MaskInput) -> np.ndarray | None:
    if m is None or isinstance(m, np.ndarray):
        return m
    from .datasets import read_label_image  # local import: metrics stays usable on arrays alone

    return read_label_image(m)


def _first_annotated(gt_masks: Sequence[MaskInput]) -> np.ndarray:
    for m in gt_masks:
        arr = _as_mask(m)
        if arr is not None:
            return arr
    raise ValueError("ground truth has no annotated frame")


def _default_object_ids(first_gt: np.ndarray) -> list[int]:
    vals = np.asarray(first_gt)
    vals = np.where(vals == VOID_LABEL, 0, vals)
    return list(range(1, int(vals.max(initial=0)) + 1))


def _relabel(mask: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map raw ids to 0..K through a LUT; ids beyond the LUT become 0 (not an object)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"masks must be H×W id arrays, got shape {m.shape}")
    if m.dtype == np.uint8 and lut.shape[0] >= 256:
        return lut[m]
    m = m.astype(np.int64, copy=False)
    out = np.zeros(m.shape, dtype=lut.dtype)
    ok = (m >= 0) & (m < lut.shape[0])
    out[ok] = lut[m[ok]]
    return out


def evaluate_sequence(
    gt_masks: Sequence[MaskInput],
    pred_masks: Sequence[MaskInput],
    object_ids: Sequence[int] | None = None,
    *,
    name: str = "",
    skip_first: bool = True,
    skip_last: bool = True,
    bound_th: float = BOUND_TH,
    strict: bool = False,
) -> SequenceScores:
    """Score one sequence with the official semi-supervised protocol.

    ``gt_masks``/``pred_masks`` are per-frame H×W id arrays (or mask image paths); a ``None`` ground truth
    marks an unannotated frame (not scored). ``object_ids`` defaults to ``1..max(first GT mask)`` as the
    official tool does. ``skip_first``/``skip_last`` drop frame 0 / frame T-1 from scoring (DAVIS: both).
    """
    n = len(gt_masks)
    if len(pred_masks) != n:
        raise ValueError(f"{name or 'sequence'}: {n} ground-truth frames but {len(pred_masks)} predictions")
    ids = _default_object_ids(_first_annotated(gt_masks)) if object_ids is None else [int(i) for i in object_ids]
    if any(i <= 0 or i == VOID_LABEL for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"object ids must be distinct, positive and not {VOID_LABEL}, got {ids}")
    k = len(ids)
    lut = np.zeros(max(256, max(ids, default=0) + 1), dtype=np.int64 if k > 254 else np.uint8)
    lut[ids] = np.arange(1, k + 1)

    scored = [
        t
        for t in range(n)
        if not (skip_first and t == 0) and not (skip_last and t == n - 1) and gt_masks[t] is not None
    ]
    j = np.zeros((k, len(scored)))
    f = np.zeros((k, len(scored)))
    fp: np.ndarray | None = None
    for col, t in enumerate(scored):
        gt = _as_mask(gt_masks[t])
        pred = _as_mask(pred_masks[t])
        if gt is None:
            continue
        if pred is None:
            raise ValueError(f"{name or 'sequence'}: no prediction for annotated frame {t}")
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape:
            raise ValueError(
                f"{name or 'sequence'} frame {t}: prediction shape {pred.shape} != ground truth {gt.shape}"
            )
        if strict:
            stray = sorted(set(np.unique(pred).tolist()) - set(ids) - {0})
            if stray:
                raise ValueError(
                    f"{name or 'sequence'} frame {t}: predicted id {stray[0]} is not a ground-truth object"
                )
        g = _relabel(gt, lut)
        p = _relabel(pred, lut)
        if fp is None:
            fp = disk(boundary_radius(gt.shape, bound_th))
        j[:, col], f[:, col] = _frame_scores(g, p, k, fp)
    return SequenceScores(name=name, object_ids=ids, frame_indices=np.asarray(scored, dtype=np.int64), J=j, F=f)


def _frame_scores(g: np.ndarray, p: np.ndarray, k: int, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every object of one frame; g, p hold 0..K."""
    conf = np.bincount((g.astype(np.int64) * (k + 1) + p).ravel(), minlength=(k + 1) * (k + 1))
    conf = conf.reshape(k + 1, k + 1)
    inter = np.diag(conf)[1:].astype(np.float64)
    area_g = conf[1:, :].sum(axis=1)
    area_p = conf[:, 1:].sum(axis=0)
    union = area_g + area_p - inter
    j = np.ones(k)
    nz = union > 0
    j[nz] = inter[nz] / union[nz]
    f = np.ones(k)  # both masks empty -> both boundaries empty -> F = 1
    present = np.flatnonzero(nz) + 1
    if present.size:
        objs = present.astype(g.dtype)[:, None, None]
        gb = seg2bmap(g[None] == objs)
        pb = seg2bmap(p[None] == objs)
        for i, obj in enumerate(present):
            f[obj - 1] = _f_from_bmaps(gb[i], pb[i], fp)
    return j, f


# -- datasets -----------------------------------------------------------------------------------------------
@dataclass
class DatasetScores:
    """Scores of many sequences; tables and files in the official layout."""

    sequences: list[SequenceScores]

    def object_rows(self) -> Iterator[tuple[SequenceScores, int, int]]:
        """(sequence, row index, object id) for every object of every sequence, in order."""
        for seq in self.sequences:
            for row, obj in enumerate(seq.object_ids):
                yield seq, row, obj

    def _column(self, metric: str, which: int) -> np.ndarray:
        parts = [seq.stats(metric)[which] for seq in self.sequences]
        return np.concatenate(parts) if parts else np.zeros(0)

    def global_table(self) -> dict[str, float]:
        """Official global row, fractions in [0, 1]: means over all objects of all sequences."""
        jm, jr, jd = (_nanmean(self._column("J", i)) for i in range(3))
        fm, fr, fd = (_nanmean(self._column("F", i)) for i in range(3))
        values = ((jm + fm) / 2.0, jm, jr, jd, fm, fr, fd)
        return dict(zip(GLOBAL_COLUMNS, values, strict=True))

    def sequence_table(self) -> list[dict[str, Any]]:
        """Official per-sequence rows: one per object, named ``f"{sequence}_{object_id}"``."""
        rows = []
        for seq, row, obj in self.object_rows():
            rows.append(
                {"Sequence": f"{seq.name}_{obj}", "J-Mean": float(seq.j_mean[row]), "F-Mean": float(seq.f_mean[row])}
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (object ids as string keys, NaN as None)."""
        g = self.global_table()
        out: dict[str, Any] = {
            "global": {
                "J&F": _js(g["J&F-Mean"]),
                "J": _js(g["J-Mean"]),
                "J-recall": _js(g["J-Recall"]),
                "J-decay": _js(g["J-Decay"]),
                "F": _js(g["F-Mean"]),
                "F-recall": _js(g["F-Recall"]),
                "F-decay": _js(g["F-Decay"]),
            },
            "sequences": {},
        }
        for seq in self.sequences:
            out["sequences"][seq.name] = {
                "J": _js(seq.mean_j),
                "F": _js(seq.mean_f),
                "J&F": _js(seq.mean_jf),
                "objects": {
                    str(obj): {"J": _js(seq.j_mean[row]), "F": _js(seq.f_mean[row])}
                    for row, obj in enumerate(seq.object_ids)
                },
            }
        return out

    def write_csv(self, directory: str | os.PathLike[str], set_name: str | None = None) -> tuple[Path, Path]:
        """Write ``global_results[-<set>].csv`` and ``per-sequence_results[-<set>].csv`` (official layout, %.3f)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        suffix = f"-{set_name}" if set_name else ""
        g_path = d / f"global_results{suffix}.csv"
        s_path = d / f"per-sequence_results{suffix}.csv"
        g = self.global_table()
        with open(g_path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(GLOBAL_COLUMNS)
            w.writerow([_fmt(g[c]) for c in GLOBAL_COLUMNS])
        with open(s_path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["Sequence", "J-Mean", "F-Mean"])
            for r in self.sequence_table():
                w.writerow([r["Sequence"], _fmt(r["J-Mean"]), _fmt(r["F-Mean"])])
        return g_path, s_path


def _js(x: float | np.floating) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _fmt(x: float) -> str:
    # pandas to_csv(float_format="%.3f") writes NaN as an empty field
    return "" if math.isnan(x) else f"{x:.3f}"


EvalItem = tuple  # (name, gt_masks, pred_masks) or (name, gt_masks, pred_masks, object_ids)


def _evaluate_item(item: EvalItem, kwargs: dict[str, Any]) -> SequenceScores:
    if len(item) not in (3, 4):
        raise ValueError("each item must be (name, gt_masks, pred_masks[, object_ids])")
    name, gt, pred = item[0], item[1], item[2]
    obj = item[3] if len(item) == 4 else None
    return evaluate_sequence(gt, pred, obj, name=str(name), **kwargs)


def evaluate_dataset(
    pairs: Iterable[EvalItem],
    workers: int = 0,
    *,
    skip_first: bool = True,
    skip_last: bool = True,
    bound_th: float = BOUND_TH,
    strict: bool = False,
) -> DatasetScores:
    """Score many sequences; with ``workers > 1`` sequences run in worker processes (order is kept).

    Items are ``(name, gt_masks, pred_masks)`` or ``(name, gt_masks, pred_masks, object_ids)``; passing mask
    paths instead of arrays keeps the inter-process traffic small.
    """
    kwargs = {"skip_first": skip_first, "skip_last": skip_last, "bound_th": bound_th, "strict": strict}
    if workers <= 1:
        return DatasetScores([_evaluate_item(it, kwargs) for it in pairs])
    results: list[SequenceScores] = []
    window: deque[Future[SequenceScores]] = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for it in pairs:  # bounded window: at most 2×workers sequences in flight
            window.append(pool.submit(_evaluate_item, it, kwargs))
            if len(window) >= 2 * workers:
                results.append(window.popleft().result())
        while window:
            results.append(window.popleft().result())
    return DatasetScores(results)
