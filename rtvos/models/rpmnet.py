"""RPM-Net: embedding E, matching D1–D3 and the warp D4, split into the three steps streaming needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..flow import FLOW_PRESETS
from ..ops import DeformConv2d, correlation_channels, local_correlation
from .embedding import FCNResNet
from .matching import MATCHING_VARIANTS, MatchingHead

__all__ = ["RPMNetConfig", "RPMNet", "warp", "resize_flow", "STRIDE", "SIZE_MULTIPLE"]

STRIDE = 4  # embeddings and flow live at S/4
SIZE_MULTIPLE = 64  # S/64 is the deepest level of E


@dataclass(frozen=True)
class RPMNetConfig:
    depth: int = 101
    matching: str = "deformable"
    width: float = 1.0  # embedding width multiplier (1.0 = the paper's ResNet widths)
    # Classical flow as a prior: D1–D3 predict a residual around this DIS preset's field (None = the paper).
    prior: str | None = None
    corr_radius: int = 0  # > 0: a local cost volume of E(tar) and the (prior-aligned) E(ref) feeds D1
    # How a prior model's residual reaches the input grid: "bilinear" (it stays at S/4) or "convex" (RAFT's
    # learned convex combination of 3×3 neighbours, guided by E(tar), to S).
    upsample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.matching not in MATCHING_VARIANTS:
            raise ValueError(f"unknown matching variant {self.matching!r}; expected one of {list(MATCHING_VARIANTS)}")
        if self.prior is not None and self.prior not in FLOW_PRESETS:
            raise ValueError(f"unknown prior {self.prior!r}; expected None or one of {list(FLOW_PRESETS)}")
        if self.upsample not in ("bilinear", "convex") or (self.upsample == "convex" and self.prior is None):
            raise ValueError(f"upsample must be 'bilinear' or (prior models only) 'convex', got {self.upsample!r}")
        if isinstance(self.corr_radius, bool) or not isinstance(self.corr_radius, int) or not 0 <= self.corr_radius <= 8:
            raise ValueError(f"corr_radius must be an int in [0, 8], got {self.corr_radius!r}")

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


def warp(x: Tensor, flow: Tensor) -> Tensor:
    """D4: backward-warp every channel of x by flow = (dy, dx) in x's pixels; zero outside the image.

    Identical to a 1×1 depthwise deformable conv with weight 1 whose offsets are the flow, but as one
    grid_sample, which every backend (ONNX, TensorRT) has natively.
    """
    if x.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp expects x N×C×H×W and flow N×2×H×W, got {tuple(x.shape)} and {tuple(flow.shape)}")
    if x.shape[-2:] != flow.shape[-2:] or (x.shape[0] != flow.shape[0] and flow.shape[0] != 1):
        raise ValueError(f"warp: flow {tuple(flow.shape)} does not match input {tuple(x.shape)}")
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    # align_corners=False normalisation puts pixel centres at integer coordinates, matching deform_conv2d.
    gy = (2 * (ys + flow[:, 0]) + 1) / h - 1
    gx = (2 * (xs + flow[:, 1]) + 1) / w - 1
    grid = torch.stack((gx, gy), dim=-1)
    if grid.shape[0] != x.shape[0]:
        grid = grid.expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample a flow field to another grid and rescale its displacements to that grid's pixels."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[0] / h, size[1] / w], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return out * scale


class ConvexUpsample(nn.Module):
    """RAFT's learned upsampling (Teed & Deng 2020): each fine pixel is a convex combination of the 3×3 coarse
    neighbours, weights from a small head on the guide features, so residual edges can follow image edges.
    Neighbours are gathered by pad + slices (no unfold), which exports to plain ONNX ops."""

    def __init__(self, guide_channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.head = nn.Sequential(
            nn.Conv2d(guide_channels + 2, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 9 * factor * factor, 1)
        )

    def forward(self, flow: Tensor, guide: Tensor) -> Tensor:
        n, _, h, w = flow.shape
        k = self.factor
        logits = self.head(torch.cat((guide, flow), 1)).view(n, 1, 9, k, k, h, w)
        # softmax over the 9 neighbours, spelled out: ONNX Runtime's Softmax on a middle axis of a 7-D tensor
        # transposes around it and cost 2.6 ms of a 13 ms match graph; these elementwise ops cost ~0.3 ms.
        e = (logits - logits.amax(2, keepdim=True)).exp()
        weights = e / e.sum(2, keepdim=True)
        padded = F.pad(flow * k, (1, 1, 1, 1), mode="replicate")
        neigh = torch.stack([padded[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)], 2)
        up = (weights * neigh.view(n, 2, 9, 1, 1, h, w)).sum(2)  # n×2×k×k×h×w
        return up.permute(0, 1, 4, 2, 5, 3).reshape(n, 2, h * k, w * k)


class RPMNet(nn.Module):
    """Holds weights only: streaming state lives in the Segmenter."""

    def __init__(self, config: RPMNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or RPMNetConfig()
        # Provenance (trained or not, source file); filled by the loaders, read by CLIs.
        self.meta: dict[str, object] = {"trained": False}
        self.embedding = FCNResNet(self.config.depth, self.config.width)
        in_ch = 2 * self.embedding.out_channels
        if in_ch != 64:  # the matching plans start at 64 = 2 × 32 channels
            raise ValueError(f"matching expects 64 input channels, embedding gives {in_ch}")
        if self.config.corr_radius:
            in_ch += correlation_channels(self.config.corr_radius)
        self.matching = MatchingHead(self.config.matching, in_ch)
        self.upsampler = ConvexUpsample(self.embedding.out_channels, STRIDE) if self.config.upsample == "convex" else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gaussian init everywhere (no pretraining); offsets start at zero and the flow near zero."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, DeformConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, DeformConv2d):
                nn.init.zeros_(m.offset_conv.weight)
                nn.init.zeros_(cast(Tensor, m.offset_conv.bias))
        last = self.matching.flow_layer
        nn.init.normal_(cast(Tensor, last.weight), std=1e-3)
        if last.bias is not None:
            nn.init.zeros_(cast(Tensor, last.bias))

    def embed(self, x: Tensor) -> Tensor:
        """N×3×S×S RGB in [0, 1] → N×32×S/4×S/4."""
        s = x.shape[-2:]
        if x.dim() != 4 or x.shape[1] != 3 or s[0] % SIZE_MULTIPLE or s[1] % SIZE_MULTIPLE:
            raise ValueError(
                f"embed expects N×3×H×W with H, W multiples of {SIZE_MULTIPLE}, got {tuple(x.shape)}"
            )
        return self.embedding(x)

    @property
    def uses_prior(self) -> bool:
        return self.config.prior is not None

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        """f4 = D3(D2(D1(concat))): N×2×S/4×S/4, (dy, dx) in S/4 pixels, pointing from target to reference.

        With a prior (``config.prior``), ``prior`` is that DIS field on the same grid and layout; E(ref) is
        first aligned by it, and D1–D3 predict the *residual* r, which is what this returns (the field is
        prior + r; the Segmenter adds r to the full-resolution prior). With convex upsampling r comes back on
        the S grid (in S pixels), else on the S/4 grid.
        """
        if e_ref.shape != e_tar.shape:
            raise ValueError(f"match: embeddings differ in shape, {tuple(e_ref.shape)} vs {tuple(e_tar.shape)}")
        if not self.uses_prior:
            if prior is not None:
                raise ValueError(f"match: this model ({self.config}) takes no prior field")
            feats = [e_ref, e_tar]
        else:
            want = (e_tar.shape[0], 2, *e_tar.shape[-2:])
            if prior is None or tuple(prior.shape) != want:
                got = None if prior is None else tuple(prior.shape)
                raise ValueError(f"match: this model refines a {self.config.prior} DIS field: pass prior of shape "
                                 f"{want} ((dy, dx) in S/4 pixels), got {got}")
            e_ref = warp(e_ref, prior)
            feats = [e_ref, e_tar]
        if self.config.corr_radius:
            feats.append(local_correlation(e_tar, e_ref, self.config.corr_radius))
        f4 = self.matching(torch.cat(feats, dim=1))
        if self.upsampler is not None:
            return self.upsampler(f4, e_tar)
        return f4

    @staticmethod
    def warp(x: Tensor, flow: Tensor) -> Tensor:
        return warp(x, flow)

    @staticmethod
    def downsample(x: Tensor) -> Tensor:
        """Area-downsample an S×S image to the S/4 grid where the loss is computed."""
        return F.avg_pool2d(x, STRIDE)

    def forward(self, ref_img: Tensor, tar_img: Tensor) -> Tensor:
        """Self-supervised training pass: predict the target at S/4 by warping the reference colours."""
        e = self.embed(torch.cat((ref_img, tar_img), dim=0))
        e_ref, e_tar = e.chunk(2, dim=0)
        flow = self.match(e_ref, e_tar)
        return self.warp(self.downsample(ref_img), flow)
