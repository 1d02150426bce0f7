"""Label-free extras for the self-supervised loss: a classical optical-flow teacher and Lab colour.

Why a DIS teacher: on our compute (minutes of CPU) the paper's colour-reconstruction loss alone gives a flow
that drifts masks (dev J&F below copying the first mask), while OpenCV's DIS optical flow, a hand-crafted
variational method that uses no labels and no learning, propagates masks well. Distilling DIS into f4 on the
same augmented pair gives the matching head a dense, well-conditioned target from the first step; the
reconstruction MSE stays in the loss. Nothing here reads an annotation, so training stays self-supervised.

Convention (checked by tests on a shifted image): `DIS.calc(target, reference)` returns (dx, dy) per target
pixel p with target(p) ≈ reference(p + flow(p)) — the same backward-warp convention as RPM-Net's f4, whose
channels are (dy, dx) in S/4 pixels. So f4_teacher = area-downsample(flow)[..., ::-1] / 4.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["TEACHERS", "DISTeacher", "robust_l1", "squared_error", "rgb_to_lab"]

TEACHERS = ("none", "dis")
_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class DISTeacher:
    """DIS flow target → reference at S/4 in f4's layout, with a forward–backward consistency weight.

    The cv2 object is created lazily and dropped on pickling, so each DataLoader worker builds its own.
    """

    def __init__(self, preset: str = "medium", stride: int = 4, fb_check: bool = True) -> None:
        if preset not in _PRESETS:
            raise ValueError(f"DIS preset must be one of {', '.join(_PRESETS)}, got {preset!r}")
        self.preset, self.stride, self.fb_check = preset, stride, fb_check
        self._dis: cv2.DISOpticalFlow | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_dis": None}

    def _calc(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(_PRESETS[self.preset])
        return self._dis.calc(a, b, None)

    def full_flow(self, ref: np.ndarray, tar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H×W×2 (dx, dy) flow with tar(p) ≈ ref(p + flow(p)), and an H×W float32 validity map in {0, 1}."""
        ref, tar = np.ascontiguousarray(ref), np.ascontiguousarray(tar)
        g_ref = cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY) if ref.ndim == 3 else ref
        g_tar = cv2.cvtColor(tar, cv2.COLOR_RGB2GRAY) if tar.ndim == 3 else tar
        fwd = self._calc(g_tar, g_ref)
        h, w = fwd.shape[:2]
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mx, my = gx + fwd[..., 0], gy + fwd[..., 1]
        valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        if self.fb_check:  # occlusions and failures: f(p) + b(p + f(p)) should vanish
            bwd = self._calc(g_ref, g_tar)
            bw = cv2.remap(bwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            err = ((fwd + bw) ** 2).sum(-1)
            valid &= err < 0.01 * ((fwd ** 2).sum(-1) + (bw ** 2).sum(-1)) + 0.5
        return fwd, valid.astype(np.float32)

    def __call__(self, ref: np.ndarray, tar: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """H×W×3 uint8 RGB pair → (2×H/s×W/s (dy, dx) in S/s pixels, 1×H/s×W/s weight in [0, 1])."""
        flow, valid = self.full_flow(ref, tar)
        h, w = flow.shape[:2]
        s = self.stride
        small = cv2.resize(flow * valid[..., None], (w // s, h // s), interpolation=cv2.INTER_AREA)
        frac = cv2.resize(valid, (w // s, h // s), interpolation=cv2.INTER_AREA)
        small = small / np.maximum(frac, 1e-6)[..., None] / s  # mean over the valid pixels of each cell
        f4 = np.ascontiguousarray(small[..., ::-1].transpose(2, 0, 1), dtype=np.float32)  # (dy, dx)
        return torch.from_numpy(f4), torch.from_numpy(frac[None].astype(np.float32))


def robust_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Weighted Charbonnier √(d² + ε²) over both flow components; weight N×1×h×w, mean over the weight."""
    d = torch.sqrt((pred.float() - target.float()) ** 2 + eps * eps).sum(1, keepdim=True)
    return (d * weight).sum() / weight.sum().clamp_min(1.0)


def squared_error(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted squared end-point error; the mean-seeking choice: moving pixels dominate the gradient."""
    d = ((pred.float() - target.float()) ** 2).sum(1, keepdim=True)
    return (d * weight).sum() / weight.sum().clamp_min(1.0)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W sRGB in [0, 1] → CIE Lab (D65) scaled by 1/100 (L in [0, 1], a and b roughly in [−1, 1]).

    Why: MSE in RGB is dominated by brightness; Lab weighs chroma like luminance, the colourisation papers' choice.
    """
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055).clamp_min(0) ** 2.4, x / 12.92)
    m = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], dtype=x.dtype, device=x.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    xyz = xyz / torch.tensor([0.950456, 1.0, 1.088754], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-8) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lab = torch.stack((116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])), dim=1)
    return lab / 100
