"""Every model variant by name, timm-style, so CLIs, checkpoints and benchmarks speak the same names."""

from __future__ import annotations

from collections.abc import Callable

from .rpmnet import RPMNet, RPMNetConfig

__all__ = ["register_model", "create_model", "list_models", "model_name"]

_REGISTRY: dict[str, Callable[..., RPMNet]] = {}


def register_model(name: str) -> Callable[[Callable[..., RPMNet]], Callable[..., RPMNet]]:
    def deco(fn: Callable[..., RPMNet]) -> Callable[..., RPMNet]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, matching: str = "deformable") -> RPMNet:
    """A freshly (Gaussian-)initialised model; use `rtvos.load_model` for trained weights."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name](matching=matching)


def model_name(config: RPMNetConfig) -> str:
    name = "rpmnet_dis" if config.prior else "rpmnet"
    name += f"_r{config.depth}"
    name = name if config.width == 1.0 else f"{name}_w{round(config.width * 100)}"
    return name + ("_cu" if config.upsample == "convex" else "")


def _register_depth(depth: int) -> None:
    @register_model(f"rpmnet_r{depth}")
    def _make(matching: str = "deformable") -> RPMNet:
        return RPMNet(RPMNetConfig(depth=depth, matching=matching))


for _d in (18, 34, 50, 101):
    _register_depth(_d)


# Beyond the paper (docs/training.md): a narrow R18 embedding whose deformable matching refines a fast DIS
# field (the "ultrafast-fine" preset) with the help of a 7×7 cost volume.
@register_model("rpmnet_dis_r18_w50")
def _rpmnet_dis_r18_w50(matching: str = "deformable") -> RPMNet:
    return RPMNet(RPMNetConfig(depth=18, matching=matching, width=0.5, prior="ultrafast-fine", corr_radius=3))


@register_model("rpmnet_dis_r18_w50_cu")
def _rpmnet_dis_r18_w50_cu(matching: str = "deformable") -> RPMNet:
    """The same with RAFT-style convex upsampling of the residual to the input grid."""
    return RPMNet(RPMNetConfig(depth=18, matching=matching, width=0.5, prior="ultrafast-fine", corr_radius=3,
                               upsample="convex"))
