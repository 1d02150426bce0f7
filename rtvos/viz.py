"""Figures of the paper's analyses: embeddings as PCA colours, composed D1–D3 sampling locations (Fig. 2/10)
and the embedding similarity at the sampling locations per matching variant (Fig. 9).

Sampling locations live on the S/4 grid where matching runs; they are drawn back in frame pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.rpmnet import STRIDE, RPMNet
from .ops import DeformConv2d
from .segmenter import Segmenter, to_model_input

__all__ = [
    "embedding_pca",
    "matching_inputs",
    "sampling_locations",
    "draw_sampling_locations",
    "sampling_similarity",
    "plot_similarity_bars",
    "save_rgb",
]


def _prep(frame: np.ndarray, size: int) -> Tensor:
    """The Segmenter's own checks and resize, so figures show exactly what the model sees when segmenting."""
    Segmenter._check_frame(frame)
    return to_model_input(frame, size)


@torch.inference_mode()
def embedding_pca(model: RPMNet, frame: np.ndarray, size: int = 256) -> np.ndarray:
    """E(frame) projected on its 3 principal components → H×W×3 uint8 (frame size), channels min-max scaled."""
    e = model.eval().embed(_prep(frame, size))[0]  # C×h×w
    c, h, w = e.shape
    x = e.reshape(c, -1).T.double()
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ v[:3].T).float()  # (hw, 3); fewer components only if C < 3 (never for 32 channels)
    lo, hi = proj.min(0).values, proj.max(0).values
    proj = (proj - lo) / (hi - lo).clamp_min(1e-12)
    img = (proj.reshape(h, w, -1).numpy() * 255).round().astype(np.uint8)
    return cv2.resize(img, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)


@torch.inference_mode()
def matching_inputs(model: RPMNet, ref: np.ndarray, tar: np.ndarray, size: int = 256) -> tuple[Tensor, Tensor, list[tuple[nn.Module, Tensor]]]:
    """(E(ref), E(tar), [(conv layer, its input)] for every conv of the matching head)."""
    model.eval()
    if ref.shape != tar.shape:
        raise ValueError(f"reference and target frames differ in shape: {ref.shape} vs {tar.shape}")
    e_ref, e_tar = model.embed(torch.cat((_prep(ref, size), _prep(tar, size)))).chunk(2)
    x = torch.cat((e_ref, e_tar), dim=1)
    convs: list[tuple[nn.Module, Tensor]] = []
    for layer in model.matching.layers:
        if isinstance(layer, (DeformConv2d, nn.Conv2d)):
            convs.append((layer, x))
        x = layer(x)
    return e_ref, e_tar, convs


def _taps(layer: Any) -> np.ndarray:  # a DeformConv2d or nn.Conv2d
    """(k, 2) base (dy, dx) of a 3×3-style kernel including dilation, torchvision tap order (row-major)."""
    kh, kw = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * 2
    dh, dw = layer.dilation if isinstance(layer.dilation, tuple) else (layer.dilation,) * 2
    ys, xs = np.meshgrid((np.arange(kh) - kh // 2) * dh, (np.arange(kw) - kw // 2) * dw, indexing="ij")
    return np.stack((ys.ravel(), xs.ravel()), 1).astype(np.float64)


@torch.inference_mode()
def sampling_locations(
    convs: list[tuple[nn.Module, Tensor]], pixel: tuple[int, int]
) -> list[np.ndarray]:
    """Composed sampling points per layer, last layer first: [(9, 2), (≤81, 2), (≤729, 2)] in (y, x) S/4 px.

    For the last layer at ``pixel`` its taps are p + k + offset(p); each point, rounded and clamped to the
    grid, is where the layer before was evaluated, so its taps (with its own offsets there) come next.
    Plain convs have zero offsets. Rounded centres are deduplicated before expanding (a grid position is
    evaluated once), so with zero offsets the levels hold 9, 81 and 225 points.
    """
    if not convs:
        raise ValueError("the matching head has no conv layers")
    h, w = convs[0][1].shape[-2:]
    y, x = int(pixel[0]), int(pixel[1])
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel {pixel} is outside the {h}×{w} matching grid")
    offs: list[np.ndarray | None] = []
    for layer, inp in convs:
        if isinstance(layer, DeformConv2d):
            o = layer.offsets(inp)[0].double()  # (2k, h, w), (dy, dx) per tap
            offs.append(o.reshape(-1, 2, h, w).permute(2, 3, 0, 1).numpy())  # h, w, k, 2
        else:
            offs.append(None)
    levels: list[np.ndarray] = []
    centres = np.array([[y, x]], dtype=np.float64)
    for (layer, _), off in zip(reversed(convs), reversed(offs)):
        base = _taps(layer)
        q = np.clip(np.rint(centres), [0, 0], [h - 1, w - 1]).astype(np.int64)
        q = np.unique(q, axis=0)
        pts = q[:, None, :] + base[None]
        if off is not None:
            pts = pts + off[q[:, 0], q[:, 1]]
        pts = pts.reshape(-1, 2)
        levels.append(pts)
        centres = pts
    return levels


def draw_sampling_locations(
    ref: np.ndarray, tar: np.ndarray, levels: list[np.ndarray], pixel: tuple[int, int], grid_hw: tuple[int, int]
) -> np.ndarray:
    """Both frames blended 50/50 with the sampling points as dots (last layer red, then green, blue)."""
    img = cv2.addWeighted(ref, 0.5, tar, 0.5, 0.0)
    hh, ww = img.shape[:2]
    sy, sx = hh / grid_hw[0], ww / grid_hw[1]
    colours = [(255, 40, 40), (40, 220, 40), (60, 120, 255), (255, 200, 0), (200, 0, 255)]
    radius = max(1, round(min(hh, ww) / 160))
    for lvl in range(len(levels) - 1, -1, -1):  # innermost first, so the last layer's dots stay on top
        c = colours[lvl % len(colours)]
        for py, px in levels[lvl]:
            cv2.circle(img, (int(round((px + 0.5) * sx - 0.5)), int(round((py + 0.5) * sy - 0.5))), radius, c, -1, cv2.LINE_AA)
    cy, cx = (pixel[0] + 0.5) * sy - 0.5, (pixel[1] + 0.5) * sx - 0.5
    cv2.drawMarker(img, (int(round(cx)), int(round(cy))), (255, 255, 255), cv2.MARKER_CROSS, 6 * radius, max(1, radius))
    return img


@torch.inference_mode()
def sampling_similarity(
    model: RPMNet, ref: np.ndarray, tar: np.ndarray, size: int = 256, grid: int = 8
) -> float:
    """Mean cosine similarity between E(tar) at a pixel and E(ref) at its composed sampling locations.

    Averaged over a grid×grid lattice of pixels (away from the border); E(ref) is sampled bilinearly.
    """
    e_ref, e_tar, convs = matching_inputs(model, ref, tar, size)
    h, w = e_tar.shape[-2:]
    ys = np.linspace(h * 0.1, h * 0.9 - 1, grid).round().astype(int)
    xs = np.linspace(w * 0.1, w * 0.9 - 1, grid).round().astype(int)
    ref_n = F.normalize(e_ref, dim=1)
    tar_n = F.normalize(e_tar, dim=1)[0]
    sims: list[float] = []
    for y in ys:
        for x in xs:
            pts = np.concatenate(sampling_locations(convs, (int(y), int(x))))
            gy = torch.from_numpy((2 * pts[:, 0] + 1) / h - 1).float()
            gx = torch.from_numpy((2 * pts[:, 1] + 1) / w - 1).float()
            g = torch.stack((gx, gy), -1).view(1, 1, -1, 2)
            samp = F.grid_sample(ref_n, g, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]
            samp = F.normalize(samp, dim=0)
            sims.append(float((samp * tar_n[:, y, x, None]).sum(0).mean()))
    return float(np.mean(sims))


def plot_similarity_bars(values: dict[str, float], path: str | os.PathLike[str], size_px: tuple[int, int] = (640, 400)) -> Path:
    """Bar chart (matplotlib, Agg) of mean cosine similarity per matching variant, exactly size_px (W, H)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not values:
        raise ValueError("no similarity values to plot")
    dpi = 100
    fig, ax = plt.subplots(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    names = list(values)
    ax.bar(names, [values[n] for n in names], color="tab:blue")
    ax.set_ylabel("mean cosine similarity")
    ax.set_title("Embedding similarity at sampling locations")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def save_rgb(img: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an RGB uint8 image as PNG (folders created); one-line OSError on failure."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write image {out}")
    return out


def grid_size(model_input: int) -> int:
    """Side of the matching grid for input size S (S/4)."""
    return model_input // STRIDE
