"""Object ids of a stream: the user's mask ids (any uint8 values) ↔ dense class indices (0 = background).

The propagator and the appearance model work on dense indices 0..K; users see their own ids. At most 256
classes, so an index always fits in a byte and the mapping is one `cv2.LUT`.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["ObjectIds"]


class ObjectIds:
    """The sorted ids of one anchor mask, background (0) first."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.uint8)
        self._lut_in = np.zeros(256, np.uint8)
        self._lut_in[self.ids] = np.arange(len(self.ids))
        self._lut_out = np.zeros(256, np.uint8)
        self._lut_out[: len(self.ids)] = self.ids

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> ObjectIds:
        return cls(np.union1d(np.unique(mask), [0]).astype(np.uint8))

    def __len__(self) -> int:
        return len(self.ids)

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.ids)

    def as_tensor(self, device: torch.device | str = "cpu") -> Tensor:
        return torch.from_numpy(self.ids.copy()).to(device)

    def to_indices(self, mask: np.ndarray) -> np.ndarray:
        """H×W uint8 ids → H×W uint8 class indices."""
        return cv2.LUT(mask, self._lut_in)

    def to_ids(self, labels: Tensor | np.ndarray) -> np.ndarray:
        """Class indices (tensor on any device, or array) → H×W uint8 ids on the host."""
        if isinstance(labels, Tensor):
            if labels.device.type != "cpu":
                return self.as_tensor(labels.device)[labels.long()].cpu().numpy()
            labels = labels.numpy()
        return cv2.LUT(labels.astype(np.uint8, copy=False), self._lut_out)
