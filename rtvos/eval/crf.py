"""CRF refinement of propagated masks: the paper's fully connected CRF (pydensecrf) and a fast local one.

Both take an RGB frame and per-label probabilities (L×H×W, label 0 = background) and return the refined
label index map. The Segmenter returns hard ids, so `soft_unary` turns a hard mask into probabilities with a
fixed confidence (the label a pixel has gets ``confidence``, the others share the rest); true per-object
scores can be passed instead when available.

`fast_crf` is a mean-field CRF whose Gaussian kernels (bilateral: position + colour, spatial: position) are
truncated to a k×k window (one combined weight per tap, shifted slices) at reduced resolution, so it costs
O(H·W·k²) per iteration, runs on CPU or GPU and traces under ``torch.compile``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CRF_MODES",
    "CRFParams",
    "dense_crf",
    "fast_crf",
    "have_pydensecrf",
    "refine_mask",
    "soft_unary",
    "unary_from_scores",
]

CRF_MODES: tuple[str, ...] = ("none", "dense", "fast")
#: Mean-field iterations of the fast CRF (cheap at 1/8 resolution; the dense CRF uses the paper's 2).
FAST_ITERATIONS: int = 5
#: Shortest side (px) of the fast CRF's default working resolution.
MIN_WORK_SIDE: int = 60


@dataclass(frozen=True)
class CRFParams:
    """Kernel widths (full-resolution pixels / colour levels) and weights, DeepLab's values by default."""

    iterations: int = 2
    bilateral_xy: float = 80.0
    bilateral_rgb: float = 13.0
    bilateral_weight: float = 10.0
    spatial_xy: float = 3.0
    spatial_weight: float = 3.0


def have_pydensecrf() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def unary_from_scores(scores: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    """Propagated per-label scores (L×H×W, summing to 1) → CRF probabilities: mixed with the uniform
    distribution so that a one-hot pixel gets exactly `soft_unary`'s ``confidence``; uncertain pixels stay
    uncertain, which is what lets the pairwise terms move them. (Raw 0/1 scores would pin every pixel.)"""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = scores.shape[0]
    if scores.ndim != 3 or n < 2:
        raise ValueError(f"scores must be L×H×W with L ≥ 2, got shape {scores.shape}")
    alpha = (1.0 - confidence) * n / (n - 1)
    return ((1.0 - alpha) * np.asarray(scores, np.float32) + alpha / n).astype(np.float32)


def soft_unary(labels: np.ndarray, num_labels: int, confidence: float = 0.8) -> np.ndarray:
    """Hard label indices (H×W, 0..L-1) → L×H×W float32 probabilities: ``confidence`` on the given label.

    Why fixed: a hard mask carries no per-pixel certainty, so every pixel gets the same prior and the CRF's
    pairwise terms decide where edges move (the other labels share ``1 - confidence``).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_labels < 2:
        raise ValueError(f"need at least 2 labels (background + object), got {num_labels}")
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be H×W, got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= num_labels):
        raise ValueError(f"labels must lie in 0..{num_labels - 1}")
    rest = (1.0 - confidence) / (num_labels - 1)
    probs = np.full((num_labels, *lab.shape), rest, dtype=np.float32)
    np.put_along_axis(probs, lab[None].astype(np.int64), np.float32(confidence), axis=0)
    return probs


def _check(frame: np.ndarray, probs: np.ndarray | Tensor) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be an H×W×3 uint8 RGB array, got {getattr(frame, 'shape', type(frame))}")
    if probs.ndim != 3 or tuple(probs.shape[1:]) != frame.shape[:2]:
        raise ValueError(f"probabilities must be L×H×W matching the frame {frame.shape[:2]}, got {tuple(probs.shape)}")


def dense_crf(frame: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Fully connected CRF (Krähenbühl & Koltun) via pydensecrf, as in the paper; returns H×W label indices."""
    _check(frame, probs)
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise RuntimeError(
            "dense CRF needs the 'pydensecrf' module: pip install pydensecrf2 (or use --crf fast)"
        ) from None
    n_labels, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, n_labels)
    p = np.clip(probs.astype(np.float32), 1e-8, 1.0)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(p).reshape(n_labels, -1)))
    d.addPairwiseGaussian(sxy=params.spatial_xy, compat=params.spatial_weight)
    d.addPairwiseBilateral(
        sxy=params.bilateral_xy, srgb=params.bilateral_rgb, rgbim=np.array(frame, dtype=np.uint8, order="C"), compat=params.bilateral_weight
    )
    q = np.asarray(d.inference(params.iterations)).reshape(n_labels, h, w)
    return q.argmax(0).astype(np.int64)


def fast_crf_torch(
    image: Tensor,
    logp: Tensor,
    iterations: int,
    window: int,
    pos_scale: float,
    bilateral_xy: float,
    bilateral_rgb: float,
    bilateral_weight: float,
    spatial_xy: float,
    spatial_weight: float,
) -> Tensor:
    """Mean field on tensors: image N×3×h×w (0..255), logp N×L×h×w log-probabilities → N×L×h×w marginals.

    Kernel widths are in full-resolution pixels; ``pos_scale`` is (working px) / (full px). Each kernel is
    normalised by its total weight per pixel (pydensecrf's normalisation, locally), so the weights mean
    what pydensecrf's ``compat`` means whatever the window. Both kernels are linear in Q, so they are
    folded into one k×k weight per pixel once; an iteration is k²−1 shifted multiply-adds and a softmax.
    """
    n, _labels, h, w = logp.shape
    r = window // 2
    taps = [(ty, tx) for ty in range(window) for tx in range(window) if (ty, tx) != (r, r)]  # no self-message
    img_p = F.pad(image, (r, r, r, r))
    inside = F.pad(torch.ones_like(image[:, :1]), (r, r, r, r))  # no message from outside the image
    kb_list, ks_list = [], []
    for ty, tx in taps:
        d2 = ((ty - r) ** 2 + (tx - r) ** 2) / (pos_scale * pos_scale)
        m = inside[:, :, ty : ty + h, tx : tx + w]
        c2 = (img_p[:, :, ty : ty + h, tx : tx + w] - image).square().sum(1, keepdim=True)
        kb_list.append(m * torch.exp(c2 * (-0.5 / bilateral_rgb**2) - d2 / (2 * bilateral_xy**2)))
        ks_list.append(m * math.exp(-d2 / (2 * spatial_xy**2)))
    kb = torch.cat(kb_list, 1)
    ks = torch.cat(ks_list, 1)
    kern = bilateral_weight * kb / kb.sum(1, keepdim=True).clamp_min(1e-6)
    kern = kern + spatial_weight * ks / ks.sum(1, keepdim=True).clamp_min(1e-6)
    weights = list(kern.split(1, dim=1))  # n, 1, h, w per tap
    q = torch.softmax(logp, dim=1)
    for _ in range(iterations):
        # Shifted slices of the zero-padded Q instead of unfold: no k²-fold copy of Q per iteration.
        qp = F.pad(q, (r, r, r, r))
        msg = torch.zeros_like(q)
        for (ty, tx), wk in zip(taps, weights):
            msg = msg + wk * qp[:, :, ty : ty + h, tx : tx + w]
        # Potts: energy of label l grows with the kernel mass of the other labels = total − same-label mass;
        # the total does not depend on l, so adding the same-label mass to the logits is equivalent.
        q = torch.softmax(logp + msg, dim=1)
    return q


def fast_crf(
    frame: np.ndarray,
    probs: np.ndarray | Tensor,
    params: CRFParams = CRFParams(iterations=FAST_ITERATIONS),
    window: int = 9,
    scales: tuple[float, ...] | None = None,
    device: str | torch.device = "cpu",
    compiled: bool = False,
) -> np.ndarray:
    """Local-window mean-field CRF, coarse to fine over ``scales``; returns H×W label indices.

    Why low resolution: the bilateral kernel is wide (80 px), which a k×k window only reaches at low
    resolution (9×9 at 1/8 spans ±32 px); an optional finer pass (e.g. ``scales=(0.125, 0.5)``) places
    edges more exactly at more cost. Defaults were picked on DAVIS-2016 dev as the closest to pydensecrf. Each
    pass adds its change in log-odds to the input's own log-probabilities at the next resolution, so the
    evidence of the mask is never blurred away.
    """
    _check(frame, probs)
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd size >= 3, got {window}")
    if scales is None:
        scales = (min(1.0, max(0.125, MIN_WORK_SIDE / min(frame.shape[:2]))),)
    if not scales or any(not 0.0 < s <= 1.0 for s in scales):
        raise ValueError(f"scales must be in (0, 1], got {scales}")
    dev = torch.device(device)
    h, w = frame.shape[:2]
    img = torch.from_numpy(np.array(frame, dtype=np.uint8, order="C")).to(dev).permute(2, 0, 1)[None].float()
    p = probs if isinstance(probs, Tensor) else torch.from_numpy(np.asarray(probs, dtype=np.float32))
    logp_full = p.to(dev, torch.float32)[None].clamp_min(1e-8).log()
    fn = _compiled_kernel() if compiled else fast_crf_torch
    delta: Tensor | None = None  # accumulated change in log-odds, at the last pass's resolution
    for scale in scales:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        img_s = F.interpolate(img, size=(sh, sw), mode="area") if (sh, sw) != (h, w) else img
        logp_s = F.interpolate(logp_full, size=(sh, sw), mode="area") if (sh, sw) != (h, w) else logp_full
        start = logp_s if delta is None else logp_s + _resize(delta, (sh, sw))
        q = fn(
            img_s, start, params.iterations, window, sh / h,
            params.bilateral_xy, params.bilateral_rgb, params.bilateral_weight,
            params.spatial_xy, params.spatial_weight,
        )
        delta = q.clamp_min(1e-8).log() - logp_s
    assert delta is not None
    out = (logp_full + _resize(delta, (h, w)))[0]
    return _argmax0(out).cpu().numpy()


def _argmax0(x: Tensor) -> Tensor:
    """argmax over dim 0 of L×H×W as a running max: torch's strided argmax is ~10× slower on CPU."""
    best, idx = x[0], torch.zeros(x.shape[1:], dtype=torch.int64, device=x.device)
    for i in range(1, x.shape[0]):
        better = x[i] > best
        idx = torch.where(better, i, idx)
        best = torch.where(better, x[i], best)
    return idx


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


_COMPILED: object | None = None


def _compiled_kernel():  # type: ignore[no-untyped-def]
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(fast_crf_torch, dynamic=False)
    return _COMPILED


def refine_mask(
    frame: np.ndarray,
    mask: np.ndarray,
    mode: str,
    object_ids: tuple[int, ...] | list[int] | None = None,
    confidence: float = 0.8,
    scores: np.ndarray | None = None,
    params: CRFParams | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Refine an H×W uint8 id mask with mode "none" | "dense" | "fast"; returns ids of the same dtype.

    ``object_ids`` lists the ids the stream knows (background 0 included or not); ``scores`` (L×H×W,
    labels ordered as ``[0, *object ids]``) replaces the fixed-confidence unary when given.
    """
    if mode not in CRF_MODES:
        raise ValueError(f"crf must be one of {', '.join(CRF_MODES)}, got {mode!r}")
    if mode == "none":
        return mask
    ids = np.union1d(np.unique(mask) if object_ids is None else np.asarray(object_ids, dtype=np.int64), [0])
    ids = np.union1d(ids, np.unique(mask)).astype(np.int64)
    if len(ids) < 2:
        ids = np.array([0, 1], dtype=np.int64)  # nothing to refine, but keep the CRF well-posed
    lut = np.zeros(256, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    if scores is not None and (scores.ndim != 3 or scores.shape[0] != len(ids)):
        raise ValueError(f"scores must be {len(ids)}×H×W (background + {len(ids) - 1} objects), got {scores.shape}")
    probs = unary_from_scores(scores, confidence) if scores is not None else soft_unary(lut[mask], len(ids), confidence)
    if mode == "dense":
        out = dense_crf(frame, probs, params or CRFParams())
    else:
        out = fast_crf(frame, probs, params or CRFParams(iterations=FAST_ITERATIONS), device=device)
    return ids[out].astype(mask.dtype)
