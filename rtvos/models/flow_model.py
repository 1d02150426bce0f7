"""Trackers whose displacement field is classical flow alone (no network in the hot path).

On real video the learned residual of the RPM-Net prior models does not yet add accuracy over its DIS prior
(docs/training.md), so the shipped default is DIS + the appearance stage; the RPM-Net models stay selectable
by name and run with the same appearance stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..flow import FLOW_PRESETS

__all__ = ["FlowModel", "FLOW_MODELS"]


@dataclass(frozen=True)
class FlowModel:
    """A named DIS preset standing where a network would: `Segmenter(FlowModel(...))` runs DIS alone."""

    name: str
    preset: str

    def __post_init__(self) -> None:
        if self.preset not in FLOW_PRESETS:
            raise ValueError(f"unknown flow preset {self.preset!r}; expected one of {', '.join(FLOW_PRESETS)}")

    @property
    def meta(self) -> dict[str, Any]:
        return {"trained": True, "network": False, "source": f"{self.name} (DIS {self.preset}, no network)"}

    def eval(self) -> FlowModel:  # the nn.Module call sites make on any model
        return self


# By name, as `load_model` accepts them: DIS presets measured through the Segmenter (docs/training.md).
FLOW_MODELS: dict[str, FlowModel] = {
    f"dis_{p.replace('-', '_')}": FlowModel(f"dis_{p.replace('-', '_')}", p) for p in FLOW_PRESETS
}
