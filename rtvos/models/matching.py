"""Matching module: from concat(E(ref), E(tar)) (64 ch at S/4) to the displacement field f4 (dy, dx).

The paper's variant is three deformable convs (D1–D3); the ablation variants swap them for plain or dilated
convs. D3 (the last layer) is linear because f4 is a signed displacement.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..ops import DeformConv2d

__all__ = ["MATCHING_VARIANTS", "build_matching", "MatchingHead"]


def _deform(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Module:
    return DeformConv2d(in_ch, out_ch, kernel_size=3, padding=dilation, dilation=dilation)


def _conv(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Module:
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)


# variant -> (layer factory, channel plan, dilation)
_PLANS: dict[str, tuple[Callable[..., nn.Module], tuple[int, ...], int]] = {
    "deformable": (_deform, (64, 32, 16, 2), 1),
    "conv1": (_conv, (64, 2), 1),
    "conv3": (_conv, (64, 32, 16, 2), 1),
    "conv5": (_conv, (64, 32, 32, 16, 16, 2), 1),
    "dilated3": (_conv, (64, 32, 16, 2), 3),
    "dilated6": (_conv, (64, 32, 16, 2), 6),
    "dilated9": (_conv, (64, 32, 16, 2), 9),
}
MATCHING_VARIANTS: tuple[str, ...] = tuple(_PLANS)


class MatchingHead(nn.Module):
    """Layers D1…Dn; BN + ReLU after every layer but the last."""

    def __init__(self, variant: str = "deformable", in_channels: int = 64) -> None:
        super().__init__()
        if variant not in _PLANS:
            raise ValueError(f"unknown matching variant {variant!r}; expected one of {list(MATCHING_VARIANTS)}")
        factory, plan, dilation = _PLANS[variant]
        plan = (in_channels, *plan[1:])  # extra inputs (a cost volume) widen D1 only
        self.variant = variant
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(plan[:-1], plan[1:])):
            layers.append(factory(cin, cout, dilation))
            if i < len(plan) - 2:
                layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    @property
    def flow_layer(self) -> nn.Module:
        return self.layers[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def build_matching(variant: str) -> MatchingHead:
    return MatchingHead(variant)
