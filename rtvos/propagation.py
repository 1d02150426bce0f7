"""Carrying a stream's mask from frame t−1 to t along a displacement field: the reference ops in PyTorch, the
CPU fast path (cv2.remap), and the `Propagator` that picks between them.

Soft propagation warps K per-object score maps (background = 1 − their sum, so mass that leaves the frame becomes
background) and takes the argmax only for the output; hard propagation warps one-hot labels every frame.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .models.rpmnet import resize_flow, warp

__all__ = ["PROPAGATION_MODES", "MASK_RESOLUTIONS", "Propagator", "RemapPropagator", "labels_from_scores",
           "onehot_scores", "propagate_labels", "propagate_scores"]

PROPAGATION_MODES = ("soft", "hard")  # soft: per-object scores carried between frames; hard: labels only
MASK_RESOLUTIONS = ("full", "model")  # full: warp at frame resolution; model: the paper's S/4 warp, upsampled


def propagate_labels(labels: Tensor, flow: Tensor, num_classes: int, mask_resolution: str = "full") -> Tensor:
    """Reference propagation in PyTorch (any device): one-hot → D4 warp → argmax."""
    onehot = F.one_hot(labels.long(), num_classes).permute(2, 0, 1).unsqueeze(0).float()
    if mask_resolution == "full":
        scores = warp(onehot, resize_flow(flow, cast("tuple[int, int]", tuple(labels.shape))))
    else:
        small = F.interpolate(onehot, size=flow.shape[-2:], mode="area")
        scores = F.interpolate(warp(small, flow), size=labels.shape, mode="bilinear", align_corners=False)
    # Pixels that sample outside the image get all-zero scores: argmax picks index 0, the background.
    return scores[0].argmax(0)


def propagate_scores(scores: Tensor, field: Tensor) -> Tensor:
    """Reference soft propagation in PyTorch: K×H×W object scores warped by a 1×2×H×W (dy, dx) field in frame
    pixels (D4 at frame resolution). Sources outside the frame give 0, so their mass goes to the background,
    whose score is 1 − the objects' sum."""
    return warp(scores[None].float(), field)[0]


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """K×H×W object scores → H×W uint8 indices (0 = background, k = object k), argmax over (1 − sum, scores)."""
    if len(scores) == 1:
        return (scores[0] > 0.5).view(np.uint8)
    if len(scores) == 0:
        return np.zeros(scores.shape[1:], np.uint8)
    # A running argmax (the first maximum wins, as np.argmax): no (K+1)×H×W concatenation.
    best = scores[0].copy()
    total = scores[0].copy()
    out = np.ones(scores.shape[1:], np.uint8)
    for k in range(1, len(scores)):
        out[scores[k] > best] = k + 1
        np.maximum(best, scores[k], out=best)
        total += scores[k]
    out[1.0 - total >= best] = 0
    return out


class RemapPropagator:
    """CPU fast path for full-resolution propagation: the same bilinear backward warp as `warp`, done by
    cv2.remap on fixed-point maps computed once per frame (≈10x grid_sample at 854x480).

    cv2.resize(INTER_LINEAR) and remap share grid_sample's convention (align_corners=False, pixel centres at
    integers, zero outside), so only remap's 1/32-pixel coordinate rounding (and, for hard labels, 8-bit
    scores) differs from `propagate_labels` / `propagate_scores`.
    """

    def __init__(self) -> None:
        self._grid: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _coords(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._grid is None or self._grid[0] != (h, w):
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = ((h, w), ys, xs)
        return self._grid[1], self._grid[2]

    def maps(self, h: int, w: int, flow: Tensor | None, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point remap maps for the field base (H×W×2 (dx, dy) in frame px, or 0) + flow (N×2×h×w (dy, dx)
        on any grid, resized and rescaled to the frame)."""
        ys, xs = self._coords(h, w)
        if flow is not None:
            f = flow[0].detach().float().cpu().numpy()
            fh, fw = f.shape[-2:]
            map_y = cv2.resize(f[0], (w, h), interpolation=cv2.INTER_LINEAR)
            map_y *= h / fh
            map_x = cv2.resize(f[1], (w, h), interpolation=cv2.INTER_LINEAR)
            map_x *= w / fw
            if base is not None:
                map_x += base[..., 0]
                map_y += base[..., 1]
        elif base is not None:
            map_x, map_y = base[..., 0].copy(), base[..., 1].copy()
        else:
            raise ValueError("maps: no field given")
        map_y += ys
        map_x += xs
        # Fixed-point maps: what remap uses internally for float maps anyway, computed once for all K maps.
        return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)

    @staticmethod
    def hard(labels: np.ndarray, maps: tuple[np.ndarray, np.ndarray], num_classes: int) -> np.ndarray:
        """labels: H×W indices (< 256); returns H×W uint8 indices (running argmax over 8-bit one-hot warps)."""
        h, w = labels.shape
        m1, m2 = maps
        lab8 = labels if labels.dtype == np.uint8 else labels.astype(np.uint8)
        best = idx = None
        for k in range(num_classes):
            onehot = np.equal(lab8, k).view(np.uint8) * np.uint8(255)  # (cv2.compare trips on 1×1 frames)
            score = cv2.remap(onehot, m1, m2, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            if best is None:
                best, idx = score, np.zeros((h, w), np.uint8)
                continue
            assert idx is not None  # set together with best on the first class
            better = score > best  # strict: ties keep the lower index, as argmax does
            idx[better] = k
            np.maximum(best, score, out=best)
        # All-zero scores (sampled outside the image) keep index 0, the background, as in the reference.
        return cast(np.ndarray, idx)

    @staticmethod
    def soft(scores: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """K×H×W float32 object scores → warped K×H×W (zero outside: that mass becomes background)."""
        m1, m2 = maps
        out = np.empty_like(scores)
        for k in range(len(scores)):
            cv2.remap(scores[k], m1, m2, cv2.INTER_LINEAR, dst=out[k], borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out


def onehot_scores(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """H×W class indices → K×H×W float32 object scores (one-hot, background implicit)."""
    if num_classes <= 1:
        return np.zeros((0, *labels.shape), np.float32)
    return np.stack([(labels == k).astype(np.float32) for k in range(1, num_classes)])


class Propagator:
    """One stream step of propagation: picks the path for the settings and the device, and updates the
    labels (and scores) in place. Stateless beyond its scratch grid, so one serves every stream."""

    def __init__(self, propagation: str = "soft", mask_resolution: str = "full") -> None:
        if propagation not in PROPAGATION_MODES:
            raise ValueError(f"propagation must be one of {PROPAGATION_MODES}, got {propagation!r}")
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ValueError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {mask_resolution!r}")
        self.propagation, self.mask_resolution = propagation, mask_resolution
        self._remap = RemapPropagator()
        # The fixed-point remap maps of the latest CPU step (scratch, like the coordinate grid): the appearance
        # stage moves its coordinates with the very same warp instead of building it again.
        self.last_maps: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def soft(self) -> bool:
        return self.propagation == "soft"

    def __call__(self, labels: Tensor, scores: np.ndarray | None, base: np.ndarray | None, flow: Tensor | None,
                 num_classes: int, hw: tuple[int, int], want_labels: bool = True) -> tuple[Tensor, np.ndarray | None]:
        """(labels, scores) at t from those at t−1 and the field base (H×W×2 (dx, dy), frame px) + flow
        (N×2×h×w (dy, dx) on the model's grid); either may be None. ``want_labels=False`` (soft, on the CPU
        path) skips the argmax when a later stage changes the scores anyway: the labels come back unchanged."""
        soft = self.soft
        self.last_maps = None
        if self.mask_resolution == "full" and labels.device.type == "cpu" and num_classes <= 256:
            maps = self.last_maps = self._remap.maps(hw[0], hw[1], flow, base)
            if soft:
                scores = self._remap.soft(cast(np.ndarray, scores), maps)
                return (torch.from_numpy(labels_from_scores(scores)) if want_labels else labels), scores
            return torch.from_numpy(self._remap.hard(labels.numpy(), maps, num_classes)), None
        device = labels.device
        if self.mask_resolution == "full":
            field = resize_flow(flow, hw) if flow is not None else torch.zeros(1, 2, *hw, device=device)
            if base is not None:
                field = field + torch.from_numpy(base[..., ::-1].copy()).permute(2, 0, 1)[None].to(field)
            if soft:
                scores = propagate_scores(torch.from_numpy(scores).to(device), field).cpu().numpy()
                return torch.from_numpy(labels_from_scores(scores)).to(device), scores
            return propagate_labels(labels, field, num_classes, "full").to(torch.uint8), None
        if flow is None:  # the paper's S/4 propagation needs a model field
            raise ValueError("mask_resolution='model' needs a model field (f4)")
        if soft:
            sc = torch.from_numpy(scores).to(device)[None]
            small = F.interpolate(sc, size=flow.shape[-2:], mode="area")
            sc = F.interpolate(warp(small, flow), size=hw, mode="bilinear", align_corners=False)[0]
            scores = sc.clamp_(0, 1).cpu().numpy()
            return torch.from_numpy(labels_from_scores(scores)).to(device), scores
        return propagate_labels(labels, flow, num_classes, "model").to(torch.uint8), None
