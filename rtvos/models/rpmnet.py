"""RPM-Net: embedding E, matching D1–D3 and the warp D4, split into the three steps streaming needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import DeformConv2d
from .embedding import FCNResNet
from .matching import MATCHING_VARIANTS, MatchingHead

__all__ = ["RPMNetConfig", "RPMNet", "warp", "resize_flow", "STRIDE", "SIZE_MULTIPLE"]

STRIDE = 4  # embeddings and flow live at S/4
SIZE_MULTIPLE = 64  # S/64 is the deepest level of E


@dataclass(frozen=True)
class RPMNetConfig:
    depth: int = 101
    matching: str = "deformable"

    def __post_init__(self) -> None:
        if self.matching not in MATCHING_VARIANTS:
            raise ValueError(f"unknown matching variant {self.matching!r}; expected one of {list(MATCHING_VARIANTS)}")

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


class RPMNet(nn.Module):
    """Holds weights only: streaming state lives in the Segmenter."""

    def __init__(self, config: RPMNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or RPMNetConfig()
        # Provenance (trained or not, source file); filled by the loaders, read by CLIs.
        self.meta: dict[str, object] = {"trained": False}
        self.embedding = FCNResNet(self.config.depth)
        in_ch = 2 * self.embedding.out_channels
        if in_ch != 64:  # the matching plans start at 64 = 2 × 32 channels
            raise ValueError(f"matching expects 64 input channels, embedding gives {in_ch}")
        self.matching = MatchingHead(self.config.matching)
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
                nn.init.zeros_(m.offset_conv.bias)
        last = self.matching.flow_layer
        nn.init.normal_(last.weight, std=1e-3)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def embed(self, x: Tensor) -> Tensor:
        """N×3×S×S RGB in [0, 1] → N×32×S/4×S/4."""
        s = x.shape[-2:]
        if x.dim() != 4 or x.shape[1] != 3 or s[0] % SIZE_MULTIPLE or s[1] % SIZE_MULTIPLE:
            raise ValueError(
                f"embed expects N×3×H×W with H, W multiples of {SIZE_MULTIPLE}, got {tuple(x.shape)}"
            )
        return self.embedding(x)

    def match(self, e_ref: Tensor, e_tar: Tensor) -> Tensor:
        """f4 = D3(D2(D1(concat))): N×2×S/4×S/4, (dy, dx) in S/4 pixels, pointing from target to reference."""
        if e_ref.shape != e_tar.shape:
            raise ValueError(f"match: embeddings differ in shape, {tuple(e_ref.shape)} vs {tuple(e_tar.shape)}")
        return self.matching(torch.cat((e_ref, e_tar), dim=1))

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
