"""Embedding module E: an FCN-ResNet that maps an S×S frame to 32 channels at S/4.

Unlike torchvision's ResNet, every stage is strided (S/8 … S/64) and the stem has 32 channels; a decoder of
four stride-2 transposed convs with skip additions brings the features back to S/4. Nothing is pretrained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["BackboneSpec", "BACKBONES", "FCNResNet", "BasicBlock", "Bottleneck"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # Stride on the 3×3 (ResNet v1.5): keeps more spatial detail than striding the 1×1.
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


@dataclass(frozen=True)
class BackboneSpec:
    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)


BACKBONES: dict[int, BackboneSpec] = {
    18: BackboneSpec(BasicBlock, (2, 2, 2, 2)),
    34: BackboneSpec(BasicBlock, (3, 4, 6, 3)),
    50: BackboneSpec(Bottleneck, (3, 4, 6, 3)),
    101: BackboneSpec(Bottleneck, (3, 4, 23, 3)),
}


class FCNResNet(nn.Module):
    """E(x): N×3×S×S in [0, 1] → N×32×S/4×S/4. S must be a multiple of 64 (five stride-2 levels below S/2)."""

    stem_channels = 32
    out_channels = 32
    mean: Tensor  # buffers (register_buffer in __init__)
    std: Tensor

    def __init__(self, depth: int = 101, width: float = 1.0) -> None:
        super().__init__()
        if depth not in BACKBONES:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(BACKBONES)}")
        if not 0 < width <= 4:
            raise ValueError(f"width multiplier must be in (0, 4], got {width}")
        base = BACKBONES[depth]
        # A narrower embedding (timm-style width multiplier) for the CPU budget; the stem and the 32-channel
        # output stay, so the matching head is the same for every width.
        spec = BackboneSpec(base.block, base.layers, tuple(max(8, round(c * width)) for c in base.widths))  # type: ignore[arg-type]
        self.depth, self.width = depth, width
        c = self.stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        self.pool = nn.MaxPool2d(3, 2, 1)
        stages = []
        in_ch = c
        for n_blocks, width in zip(spec.layers, spec.widths):
            blocks = [spec.block(in_ch, width, stride=2)]
            in_ch = width * spec.block.expansion
            blocks += [spec.block(in_ch, width) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        # Decoder widths come from the encoder: stage i+1 → stage i, and the last one → the stem (32).
        self.stage_channels = [w * spec.block.expansion for w in spec.widths]
        skip_channels = [c, *self.stage_channels[:-1]]
        ups = []
        for in_c, out_c in zip(reversed(self.stage_channels), reversed(skip_channels)):
            ups.append(nn.ConvTranspose2d(in_c, out_c, 3, 2, 1, output_padding=1))
        self.ups = nn.ModuleList(ups)
        # BN + ReLU after the first three merges; the final embedding stays linear (signed features match better).
        self.up_norms = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True)) for ch in list(reversed(skip_channels))[:-1]
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        skips = [self.pool(self.stem(x))]
        for stage in self.stages:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for i, up in enumerate(self.ups):
            y = up(y) + skips.pop()
            if i < len(self.up_norms):
                y = self.up_norms[i](y)
        return y
