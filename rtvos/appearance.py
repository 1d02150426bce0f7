"""Causal appearance stage: what the flow forgets, colour remembers.

Flow propagation drifts: every bilinear warp blurs the scores a little, and where the field is wrong (occlusion,
fast motion, thin parts) mass leaks onto the background for good. This stage keeps, per object, a colour model
that the flow cannot erase and fuses it with the propagated scores, so appearance decides where the flow is unsure.

The model is a grid of counts over (cell-y, cell-x, Y, U, V, class): 32-px cells of the *anchor* frame whose
positions follow the object (each working pixel carries its anchor-frame coordinates, moved by the backward field
every frame), so "red near the head" and "red near the feet" stay different things. It holds the anchor's
counts (always kept) plus a decayed sum of confident predictions. Reading it gives a per-pixel, per-class
likelihood p(colour | class, cell); fusion is Bayes with the propagated scores as the prior:

    s_k ∝ p_flow,k · p(c | k)^β,    p_flow pulled towards uniform where the forward–backward check fails.

With K = 1 that is σ(logit s + β·LLR). Everything is vectorised (bincount splats, table gathers, OpenCV
resizes); memory is bounded by the grid (cells × 512 colours × (K+1) classes, ≈ 0.8 MB per class at 854×480)
and does not grow with time. An object whose mass collapses (it went behind something, or the flow lost it) is
searched for by colour over the whole frame and re-seeded (`AppearanceGrid.redetect`).
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from .common import APPEARANCE_MODES, DEFAULT_APPEARANCE
from .flow import FLOW_PRESETS, DISFlow, resize_field

__all__ = ["APPEARANCE_MODES", "DEFAULT_APPEARANCE", "GridConfig", "GridState", "AppearanceGrid", "AppearanceStage",
           "fuse_scores", "fb_consistency", "fb_confidence", "APPEARANCE_MODES", "DEFAULT_APPEARANCE"]



@dataclass(frozen=True)
class GridConfig:
    """Settings of the appearance grid and its fusion (the defaults are the measured ones, docs/training.md)."""

    cell: int = 32  # px of the anchor frame per grid cell
    bits: tuple[int, int, int] = (3, 3, 3)  # Y, U, V bits: 8×8×8 colour bins
    scale: int = 2  # the model works at 1/scale of the frame
    decay: float = 0.7  # per-frame decay of the recent counts
    confident: float = 0.95  # a pixel teaches class k when its fused score for k exceeds this
    recent_weight: float = 1.0  # weight of the recent counts beside the anchor's
    prior: float = 1.0  # Dirichlet pseudo-count per bin
    llr_clip: float = 4.0  # |log-likelihood ratio| bound: one colour never overrules the flow by more
    beta: float = 0.5  # weight of the appearance log-likelihood in the fusion
    fb_shrink: float = 0.8  # where forward–backward fails, the flow prior is pulled this far towards uniform
    fb_preset: str | None = "ultrafast-fine"  # DIS preset of the forward field for the FB check (None: no check)
    fb_scale: int = 2  # the FB check (its forward DIS) runs at 1/fb_scale of the frame
    eps: float = 1e-3  # flow prior floor: appearance can still revive a class the flow gave zero
    update_every: int = 3  # learn and rebuild every n-th frame (decay^n): dev 0.526 for 1, 2 and 3, at a third of the cost
    # Re-detection: an object whose mass falls under lost_ratio × its reference mass is searched for by colour
    # over the whole frame and re-seeded on the candidate region whose area is closest to the reference.
    lost_ratio: float = 0.2
    redetect_area: tuple[float, float] = (0.3, 3.0)  # accepted region area, × the reference mass
    redetect_llr: float = 1.0  # candidate pixels: colour-only LLR of the object against the rest above this

    def __post_init__(self) -> None:
        if min(self.cell, self.scale, self.update_every, self.fb_scale) < 1:
            raise ValueError("cell, scale, fb_scale and update_every must be >= 1")
        if len(self.bits) != 3 or any(not 1 <= b <= 8 for b in self.bits):
            raise ValueError(f"bits must be three values in 1..8, got {self.bits}")
        for name in ("decay", "confident", "fb_shrink", "lost_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.beta < 0 or self.prior <= 0 or self.llr_clip <= 0 or not 0 < self.eps < 0.5:
            raise ValueError("beta >= 0, prior > 0, llr_clip > 0 and 0 < eps < 0.5 are required")
        if self.fb_preset is not None and self.fb_preset not in FLOW_PRESETS:
            raise ValueError(f"fb_preset must be one of {list(FLOW_PRESETS)} or None, got {self.fb_preset!r}")

    @property
    def colours(self) -> int:
        return 1 << sum(self.bits)


@dataclass
class GridState:
    """One stream's appearance model (part of `SegmenterState`); its size is fixed at the anchor."""

    frame_size: tuple[int, int]  # (H, W) of the stream
    work_size: tuple[int, int]  # (h, w) the model works at
    grid: tuple[int, int]  # cells (gy, gx)
    num_classes: int  # K + 1, background first
    coords: np.ndarray  # H×W×2 float32: anchor-frame (x, y) of each frame pixel
    anchor: np.ndarray  # (K+1, cells·colours) float32 blurred anchor counts, background first
    recent: np.ndarray | None = None  # same shape, decayed confident counts (unblurred)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (K, N) fusion factors
    global_table: np.ndarray | None = None  # (K, colours) cell-free LLR per object, for re-detection (lazy)
    reference_mass: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (K,) frame px
    updates: int = 0
    redetected: int = 0  # objects re-seeded so far
    pending: Future[Any] | None = None  # the rebuild running on a worker thread (joined before the next use)

    @property
    def nbytes(self) -> int:
        arrays = (self.coords, self.anchor, self.recent, self.table, self.global_table, self.reference_mass)
        return sum(a.nbytes for a in arrays if a is not None)


@functools.lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel coordinates of an h×w grid, float32, read-only: built once per size, not per frame."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


def _blur121(g: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """[1 2 1]/4 along each axis (mass at the edges leaks out, for every class alike)."""
    for ax in axes:
        if g.shape[ax] < 2:
            continue
        out = g * np.float32(0.5)
        lo = [slice(None)] * g.ndim
        hi = [slice(None)] * g.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        out[tuple(hi)] += np.float32(0.25) * g[tuple(lo)]
        out[tuple(lo)] += np.float32(0.25) * g[tuple(hi)]
        g = out
    return g


class AppearanceGrid:
    """Stateless operator over a `GridState`: one instance serves many streams."""

    def __init__(self, config: GridConfig | None = None) -> None:
        self.config = config or GridConfig()

    # -- geometry --------------------------------------------------------------------------------------------
    def work_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        s = self.config.scale
        return max(1, hw[0] // s), max(1, hw[1] // s)

    @staticmethod
    def small(img: np.ndarray, st: GridState) -> np.ndarray:
        """An image at the working resolution (area-averaged), channels kept."""
        h, w = st.work_size
        if img.shape[:2] == (h, w):
            return img
        out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return out.reshape(h, w, *img.shape[2:])

    def colour_index(self, frame_small: np.ndarray) -> np.ndarray:
        """h×w×3 uint8 RGB → h×w int32 YUV bin."""
        by, bu, bv = self.config.bits
        yuv = cv2.cvtColor(frame_small, cv2.COLOR_RGB2YUV).astype(np.int32)
        ci = (yuv[..., 0] >> (8 - by)) << (bu + bv)
        ci |= (yuv[..., 1] >> (8 - bu)) << bv
        ci |= yuv[..., 2] >> (8 - bv)
        return ci

    def index(self, frame: np.ndarray, st: GridState) -> tuple[np.ndarray, np.ndarray]:
        """(bin index into the grid, colour-only index), both h×w int32, for this frame."""
        ci = self.colour_index(self.small(frame, st))
        gy, gx = st.grid
        s = self.config.scale
        (h, w), (H, W) = st.work_size, st.frame_size
        if (h - 1) * s + s // 2 < H and (w - 1) * s + s // 2 < W:  # the frame pixel nearest each working centre
            coords = st.coords[s // 2::s, s // 2::s][:h, :w]
        else:  # frames smaller than the scale
            ys = np.minimum(np.arange(h) * s + s // 2, H - 1)
            xs = np.minimum(np.arange(w) * s + s // 2, W - 1)
            coords = st.coords[ys[:, None], xs[None, :]]
        inv = np.float32(1.0 / self.config.cell)
        cx = np.clip((coords[..., 0] * inv).astype(np.int32), 0, gx - 1)
        cy = np.clip((coords[..., 1] * inv).astype(np.int32), 0, gy - 1)
        return (cy * gx + cx) * self.config.colours + ci, ci

    # -- model -----------------------------------------------------------------------------------------------
    # Counts are class-major, (K+1, cells·colours) float32 (background first): each class is one contiguous
    # block, so the per-class sums, ratios and the per-object gathers run over contiguous memory.
    def _counts(self, idx: np.ndarray, weights: list[np.ndarray], st: GridState) -> np.ndarray:
        """Per-class h×w weights (background first) → (K+1, cells·colours) float32 counts."""
        n = st.grid[0] * st.grid[1] * self.config.colours
        flat = idx.ravel()
        return np.stack([np.bincount(flat, weights=w.ravel(), minlength=n) for w in weights]).astype(np.float32)

    def _hits(self, idx: np.ndarray, masks: list[np.ndarray], st: GridState) -> np.ndarray:
        """Per-class h×w bool masks → (K+1, cells·colours) float32 counts of the masked pixels."""
        n = st.grid[0] * st.grid[1] * self.config.colours
        flat = idx.ravel()
        return np.stack([np.bincount(flat[m.ravel()], minlength=n) for m in masks]).astype(np.float32)

    def _blur(self, g: np.ndarray, st: GridState) -> np.ndarray:
        shape = (st.num_classes, *st.grid, *(1 << b for b in self.config.bits))
        return _blur121(g.reshape(shape), (1, 2, 3, 4, 5)).reshape(g.shape)

    def _likelihood(self, counts: np.ndarray, groups: int) -> np.ndarray:
        """Counts (C, groups·colours) → p(colour | class, group), Dirichlet-smoothed, float32."""
        c = self.config
        g = counts.reshape(len(counts), groups, c.colours)
        n = g.sum(2, keepdims=True) + np.float32(c.prior * c.colours)
        return ((g + np.float32(c.prior)) / n).reshape(counts.shape)

    def rebuild(self, st: GridState) -> None:
        """Recompute the fusion table from the anchor and recent counts."""
        counts = st.anchor if st.recent is None else st.anchor + self.config.recent_weight * self._blur(st.recent, st)
        st.table = self._table(counts, st.grid[0] * st.grid[1])
        st.global_table = None

    def _table(self, counts: np.ndarray, groups: int) -> np.ndarray:
        """The fusion factors of each object against the background per (cell, colour): (p(c|k) / p(c|0))^β with
        p Dirichlet-smoothed per cell and the ratio clipped to e^±llr_clip; (K, N) float32."""
        c = self.config
        g = counts.reshape(len(counts), groups, c.colours)
        prior, total = np.float32(c.prior), np.float32(c.prior * c.colours)
        n = g.sum(2, keepdims=True) + total  # per class and cell
        ratio = g[1:] + prior  # p_k / p_0 = (g_k + a) / (g_0 + a) · n_0 / n_k
        ratio /= g[:1] + prior
        ratio *= n[:1] / n[1:]
        bound = np.float32(math.exp(c.llr_clip))
        np.clip(ratio, 1.0 / bound, bound, out=ratio)
        ratio = ratio.reshape(len(counts) - 1, groups * c.colours)
        if c.beta == 0.5:
            return np.sqrt(ratio, out=ratio)
        if c.beta != 1.0:
            np.power(ratio, np.float32(c.beta), out=ratio)
        return ratio

    def init(self, frame: np.ndarray, labels: np.ndarray, num_classes: int) -> GridState:
        """A new model from an anchor frame and its H×W class indices (0 = background)."""
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        h, w = self.work_size(hw)
        c = self.config
        coords = np.empty((*hw, 2), np.float32)
        coords[..., 0] = np.arange(hw[1], dtype=np.float32)[None, :]
        coords[..., 1] = np.arange(hw[0], dtype=np.float32)[:, None]
        st = GridState(frame_size=hw, work_size=(h, w), grid=(-(-hw[0] // c.cell), -(-hw[1] // c.cell)),
                       num_classes=num_classes, coords=coords, anchor=np.zeros((num_classes, 0), np.float32))
        idx, _ = self.index(frame, st)
        onehot = [self.small((labels == k).astype(np.float32), st) for k in range(num_classes)]
        st.anchor = self._blur(self._counts(idx, onehot, st), st)
        st.reference_mass = np.bincount(labels.ravel().astype(np.int64), minlength=num_classes)[1:].astype(np.float32)
        self.rebuild(st)
        return st

    def advance(self, st: GridState, backward: np.ndarray | None = None,
                maps: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Carry the anchor coordinates along this frame's backward field (H×W×2 (dx, dy), frame px), or along
        the propagator's own fixed-point remap ``maps`` of that field. At frame resolution: on a coarser grid,
        coordinates blur across motion boundaries and cells bleed (dev −0.003)."""
        if maps is None:
            if backward is None:
                raise ValueError("advance needs the backward field or its remap maps")
            H, W = st.frame_size
            f = resize_field(backward, (H, W)) if backward.shape[:2] != (H, W) else backward
            gx, gy = _pixel_grid(H, W)
            maps = (f[..., 0] + gx, f[..., 1] + gy)
        st.coords = cv2.remap(st.coords, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def factors(self, st: GridState, idx: np.ndarray) -> np.ndarray:
        """Each object's fusion factor against the background at frame resolution: K×H×W float32."""
        H, W = st.frame_size
        out = np.empty((st.num_classes - 1, H, W), np.float32)
        for k in range(len(out)):
            cv2.resize(st.table[k][idx], (W, H), dst=out[k], interpolation=cv2.INTER_LINEAR)
        return out

    def confident(self, st: GridState, scores: np.ndarray) -> list[np.ndarray]:
        """Per class (background first), h×w bool: where the fused score exceeds the confidence bound."""
        small = [self.small(s, st) for s in scores]
        bg = 1.0 - (np.sum(small, 0) if small else np.zeros(st.work_size, np.float32))
        thr = self.config.confident
        return [x > thr for x in (bg, *small)]

    def learn(self, st: GridState, idx: np.ndarray, confident: list[np.ndarray]) -> bool:
        """Add one frame's confident pixels to the recent counts; True when the table must be rebuilt."""
        c = self.config
        st.updates += 1
        if c.recent_weight == 0 or st.updates % c.update_every:
            return False
        g = self._hits(idx, confident, st)
        decay = np.float32(c.decay ** c.update_every)
        if st.recent is None:
            st.recent = (1.0 - decay) * g
        else:
            st.recent *= decay
            st.recent += (1.0 - decay) * g
        return True

    # -- re-detection ----------------------------------------------------------------------------------------
    def global_llr(self, st: GridState, ci: np.ndarray) -> np.ndarray:
        """Cell-free colour log-likelihood ratio of each object against all other classes: K×h×w."""
        if st.global_table is None:
            counts = st.anchor if st.recent is None else st.anchor + self.config.recent_weight * st.recent
            per_colour = counts.reshape(st.num_classes, -1, self.config.colours).sum(1)  # (K+1) × colours
            rest = per_colour.sum(0, keepdims=True) - per_colour[1:]
            st.global_table = np.log(self._likelihood(per_colour[1:], 1) / self._likelihood(rest, 1))
        return st.global_table[:, ci]

    def redetect(self, st: GridState, scores: np.ndarray, ci: np.ndarray) -> list[int]:
        """Re-seed lost objects in place (scores: K×H×W fused object scores); returns their indices (0-based).

        An object is lost when its mass (sum of scores, frame px) is under lost_ratio × its reference mass (the
        anchor's area, followed slowly while it is tracked). It is looked for by colour alone, since the cells
        of a lost object no longer say where it is, among pixels no object holds, and re-seeded on the connected
        candidate region whose area is closest to the reference, if one lies in ``redetect_area``."""
        c = self.config
        K = len(scores)
        if K == 0:
            return []
        mass = scores.reshape(K, -1).sum(1)
        ref = st.reference_mass
        lost = mass < c.lost_ratio * ref
        ref[~lost] = 0.95 * ref[~lost] + 0.05 * mass[~lost]
        if not lost.any():
            return []
        H, W = st.frame_size
        h, w = st.work_size
        px = (H / h) * (W / w)  # frame px per working px
        llr = self.global_llr(st, ci)
        held = self.small(np.ascontiguousarray(scores.sum(0)), st) > 0.5
        found = []
        for k in np.flatnonzero(lost):
            cand = ((llr[k] > c.redetect_llr) & ~held).astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
            if n <= 1:
                continue
            areas = stats[1:, cv2.CC_STAT_AREA] * px
            lo, hi = c.redetect_area
            ok = (areas >= lo * ref[k]) & (areas <= hi * ref[k])
            if not ok.any():
                continue
            closeness = np.where(ok, -np.abs(np.log(np.maximum(areas, 1.0) / ref[k])), -np.inf)
            best = 1 + int(np.argmax(closeness))
            region = cv2.resize((lab == best).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
            np.maximum(scores[k], region, out=scores[k])
            held |= lab == best
            found.append(int(k))
        if found:  # the re-seeded objects take those pixels from whoever held them
            total = scores.sum(0)
            over = total > 1.0
            if over.any():
                scores[:, over] /= total[over]
            st.redetected += len(found)
        return found


def fuse_scores(flow_scores: np.ndarray, factors: np.ndarray, confidence: np.ndarray | None,
                config: GridConfig) -> np.ndarray:
    """Bayes fusion: K×H×W propagated object scores (the prior) × K×H×W appearance factors (each object's
    likelihood over the background's, `AppearanceGrid.factors`) → K×H×W fused scores.

    The prior is floored (eps, renormalised) and, where the forward–backward confidence (H×W in [0, 1]) is low,
    pulled towards uniform, so appearance decides there: p = a·s + b per pixel with a = keep / (1 + (K+1)·eps)
    and b = keep·eps / (1 + (K+1)·eps) + (1 − keep) / (K+1). With K = 1 this is σ(logit p + β·LLR)."""
    K = len(flow_scores)
    norm = np.float32(1.0 / (1.0 + (K + 1) * config.eps))
    u = np.float32(1.0 / (K + 1))
    bg = np.clip(1.0 - flow_scores.sum(0), 0.0, 1.0)
    if confidence is not None and config.fb_shrink > 0:
        keep = 1.0 - np.float32(config.fb_shrink) * (1.0 - confidence)
        a = keep * norm
        b = keep * np.float32(config.eps) * norm
        b += (1.0 - keep) * u
    else:
        a, b = norm, np.float32(config.eps) * norm  # type: ignore[assignment]
    num = flow_scores * a
    num += b
    num *= factors
    den = bg * a
    den += b
    den += num.sum(0)
    num /= den
    return num.astype(np.float32, copy=False)


def fb_consistency(backward: np.ndarray, forward: np.ndarray, px: float = 1.0) -> np.ndarray:
    """Forward–backward check (Sundaram et al. 2010) of a backward field b (t → t−1) against a forward field
    f (t−1 → t), both h×w×2 (dx, dy) in px of their grid, whose pixel is ``px`` frame pixels: consistent where
    |b + f(x + b)|² ≤ 0.01 (|b|² + |f(x + b)|²) + 0.5 frame px². Returns h×w bool."""
    h, w = backward.shape[:2]
    gx, gy = _pixel_grid(h, w)
    fw = cv2.remap(forward, backward[..., 0] + gx, backward[..., 1] + gy, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)
    s = backward + fw
    e2 = s[..., 0] ** 2 + s[..., 1] ** 2
    m2 = backward[..., 0] ** 2 + backward[..., 1] ** 2 + fw[..., 0] ** 2 + fw[..., 1] ** 2
    return np.asarray(e2 <= 0.01 * m2 + 0.5 / (px * px))


def fb_confidence(backward: np.ndarray, forward: np.ndarray, frame_hw: tuple[int, int], soften: int = 5) -> np.ndarray:
    """Soft forward–backward confidence at frame resolution (H×W float32 in [0, 1]) from two fields on one grid
    (in that grid's px): the check, box-softened over ≈ ``soften`` frame px, upsampled to the frame."""
    h, w = backward.shape[:2]
    H, W = frame_hw
    px = math.sqrt((H / h) * (W / w))
    c: np.ndarray = fb_consistency(backward, forward, px).astype(np.float32)
    k = max(1, int(round(soften / px)))
    if k > 1:
        c = np.asarray(cv2.blur(c, (k, k)))
    if (h, w) != (H, W):
        c = np.asarray(cv2.resize(c, (W, H), interpolation=cv2.INTER_LINEAR))
    return c


class AppearanceStage:
    """The Segmenter's appearance step: anchor a model, then per frame advance it, check the field forward–
    backward, fuse, re-detect and learn. Holds settings and a DIS instance, no stream state."""

    def __init__(self, config: GridConfig | None = None) -> None:
        self.grid = AppearanceGrid(config)
        self.config = self.grid.config
        self._fb_dis = DISFlow(self.config.fb_preset) if self.config.fb_preset is not None else None

    def fb_gray(self, gray: np.ndarray) -> np.ndarray | None:
        """The frame's grey image at the FB check's resolution (None without a check)."""
        if self._fb_dis is None:
            return None
        s = self.config.fb_scale
        if s == 1:
            return gray
        h, w = gray.shape
        return cv2.resize(gray, (max(1, w // s), max(1, h // s)), interpolation=cv2.INTER_AREA)

    def start_forward(self, submit: Callable[..., Future[Any]], prev: np.ndarray | None,
                      cur: np.ndarray | None) -> Future[Any] | None:
        """Start the forward field t−1 → t (for the FB check) on a worker thread, beside the backward one."""
        if self._fb_dis is None or prev is None or cur is None or prev.shape != cur.shape:
            return None
        return submit(self._fb_dis, prev, cur)

    def anchor(self, frame: np.ndarray, labels: np.ndarray, num_classes: int) -> GridState:
        return self.grid.init(frame, labels, num_classes)

    def __call__(self, st: GridState, frame: np.ndarray, scores: np.ndarray,
                 backward_on: Callable[[tuple[int, int]], np.ndarray], forward: Future[Any] | None,
                 submit: Callable[..., Future[Any]] | None = None,
                 maps: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Fused K×H×W scores for this frame from the propagated ones. ``backward_on(hw)`` gives the field that
        propagated them on an h×w grid (``maps``: the propagator's remap maps of it, when it has them);
        ``forward`` is `start_forward`'s pending field. With ``submit`` the model's rebuild runs on a worker
        thread and is joined at the next frame (off the critical path)."""
        grid = self.grid
        self.wait(st)
        grid.advance(st, None if maps is not None else backward_on(st.frame_size), maps)
        idx, ci = grid.index(frame, st)
        conf = None
        if forward is not None:
            fwd = forward.result()
            conf = fb_confidence(backward_on(fwd.shape[:2]), fwd, st.frame_size)
        fused = fuse_scores(scores, grid.factors(st, idx), conf, self.config)
        grid.redetect(st, fused, ci)
        c = self.config
        if c.recent_weight == 0 or (st.updates + 1) % c.update_every:  # not a learning frame: count it only
            st.updates += 1
            return fused
        confident = grid.confident(st, fused)
        if submit is None:
            if grid.learn(st, idx, confident):
                grid.rebuild(st)
        else:
            st.pending = submit(self._learn_and_rebuild, st, idx, confident)
        return fused

    def _learn_and_rebuild(self, st: GridState, idx: np.ndarray, confident: list[np.ndarray]) -> None:
        if self.grid.learn(st, idx, confident):
            self.grid.rebuild(st)

    @staticmethod
    def wait(st: GridState) -> None:
        """Join the model's pending rebuild (re-raising its error)."""
        if st.pending is not None:
            pending, st.pending = st.pending, None
            pending.result()
