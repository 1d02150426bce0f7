"""Streaming segmentation: one `Segmenter` per video, fed one frame at a time, causal.

The model holds weights only; everything that belongs to one stream (the cached embedding of frame t−1, the
mask at t−1, the object ids) lives in a typed `SegmenterState`, so one model can serve many streams.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import Backend, create_backend
from .models.rpmnet import SIZE_MULTIPLE, RPMNet, resize_flow, warp

__all__ = ["Segmenter", "SegmenterState", "StepResult", "to_model_input", "propagate_labels", "DEFAULT_SIZE"]

DEFAULT_SIZE = 512  # the paper's S, used when a checkpoint does not record the size it was trained at

# Fused backends report "embed_match" instead of "embed" + "match" (one compiled unit per frame).
STAGES = ("preprocess", "embed", "match", "embed_match", "propagate", "postprocess")


@dataclass
class StepResult:
    mask: np.ndarray  # H×W uint8 object ids, the frame's own size
    frame_index: int
    object_ids: tuple[int, ...]  # ids present in the stream, background (0) first
    timings_ms: dict[str, float] = field(default_factory=dict)
    anchored: bool = False  # True when this frame's mask was given, not propagated
    flow: Tensor | None = None  # f4 (N×2×S/4×S/4, dy/dx in S/4 px) that produced this mask, None when anchored

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())


@dataclass
class SegmenterState:
    frame_index: int = -1
    frame_size: tuple[int, int] | None = None  # (H, W) of the stream
    object_ids: Tensor | None = None  # (K+1,) uint8, object_ids[0] == 0
    labels: Tensor | None = None  # (H, W) uint8 indices into object_ids: the mask at t−1
    prev_embedding: Tensor | None = None  # E(frame t−1), the cache that makes a step one embedding
    prev_input: Tensor | None = None  # preprocessed frame t−1, kept only when caching is off

    @property
    def has_mask(self) -> bool:
        return self.labels is not None


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or any(s <= 0 or s % SIZE_MULTIPLE for s in hw):
        raise ValueError(f"size must be a positive multiple of {SIZE_MULTIPLE} (or a pair of them), got {size!r}")
    return hw  # type: ignore[return-value]


def to_model_input(
    frame: np.ndarray, size: int | tuple[int, int], device: str | torch.device = "cpu"
) -> Tensor:
    """H×W×3 uint8 → 1×3×S×S float in [0, 1]; resized on the CPU in uint8, where it is cheapest."""
    h, w = _as_size(size)
    if frame.shape[:2] != (h, w):
        shrink = frame.shape[0] > h and frame.shape[1] > w
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True)
    return x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def propagate_labels(labels: Tensor, flow: Tensor, num_classes: int, mask_resolution: str = "full") -> Tensor:
    """Reference propagation in PyTorch (any device): one-hot → D4 warp → argmax."""
    onehot = F.one_hot(labels.long(), num_classes).permute(2, 0, 1).unsqueeze(0).float()
    if mask_resolution == "full":
        scores = warp(onehot, resize_flow(flow, tuple(labels.shape)))
    else:
        small = F.interpolate(onehot, size=flow.shape[-2:], mode="area")
        scores = F.interpolate(warp(small, flow), size=labels.shape, mode="bilinear", align_corners=False)
    # Pixels that sample outside the image get all-zero scores: argmax picks index 0, the background.
    return scores[0].argmax(0)


class _RemapPropagator:
    """CPU fast path for full-resolution propagation: the same bilinear backward warp as `warp`, done by
    cv2.remap one 8-bit object map at a time, with a running argmax (≈10x grid_sample on float one-hots at
    854x480, and no H×W×K array is ever built).

    cv2.resize(INTER_LINEAR) and remap share grid_sample's convention (align_corners=False, pixel centres at
    integers, zero outside), so only the 8-bit score rounding differs from `propagate_labels`.
    """

    def __init__(self) -> None:
        self._grid: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _coords(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._grid is None or self._grid[0] != (h, w):
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = ((h, w), ys, xs)
        return self._grid[1], self._grid[2]

    def propagate(self, labels: np.ndarray, flow: Tensor, num_classes: int) -> np.ndarray:
        """labels: H×W indices (< 256); returns H×W uint8 indices."""
        h, w = labels.shape
        f = flow[0].detach().float().cpu().numpy()
        fh, fw = f.shape[-2:]
        ys, xs = self._coords(h, w)
        map_y = cv2.resize(f[0], (w, h), interpolation=cv2.INTER_LINEAR)
        map_y *= h / fh
        map_y += ys
        map_x = cv2.resize(f[1], (w, h), interpolation=cv2.INTER_LINEAR)
        map_x *= w / fw
        map_x += xs
        # Fixed-point maps: what remap uses internally for float maps anyway, computed once for all K maps.
        m1, m2 = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
        lab8 = labels if labels.dtype == np.uint8 else labels.astype(np.uint8)
        best = idx = None
        for k in range(num_classes):
            score = cv2.remap(cv2.compare(lab8, k, cv2.CMP_EQ), m1, m2, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            if best is None:
                best, idx = score, np.zeros((h, w), np.uint8)
                continue
            better = score > best  # strict: ties keep the lower index, as argmax does
            idx[better] = k
            np.maximum(best, score, out=best)
        # All-zero scores (sampled outside the image) keep index 0, the background, as in the reference.
        return idx


class Segmenter:
    """`step(frame, mask=None)` per frame; a mask on the first frame (and optionally later, to re-anchor).

    mask_resolution="full" warps the previous mask at frame resolution with f4 upsampled (sharp boundaries);
    "model" warps it at S/4 as the paper does and upsamples the scores.
    """

    def __init__(
        self,
        model: RPMNet,
        size: int | tuple[int, int] | None = None,
        device: str | torch.device = "cpu",
        cache_embeddings: bool = True,
        mask_resolution: str = "full",
        sync_timings: bool = True,
        backend: str = "eager",
        precision: str = "fp32",
    ) -> None:
        if mask_resolution not in ("full", "model"):
            raise ValueError(f"mask_resolution must be 'full' or 'model', got {mask_resolution!r}")
        # None: the size the checkpoint was trained at (recorded in its meta), else the paper's 512.
        self.size = _as_size(size if size is not None else int(model.meta.get("size", DEFAULT_SIZE)))
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.backend: Backend = create_backend(backend, self.model, self.size, self.device, precision)
        self.cache_embeddings = cache_embeddings
        self.mask_resolution = mask_resolution
        self.sync_timings = sync_timings and self.device.type == "cuda"
        self.state = SegmenterState()
        self._remap = _RemapPropagator()  # scratch (coordinate grid), not stream state

    def reset(self) -> None:
        """Forget the stream (cache, mask, ids); the next step needs a mask again."""
        self.state = SegmenterState()

    # -- per-frame -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None) -> StepResult:
        self._check_frame(frame)
        if mask is not None:
            self._check_mask(mask, frame.shape[:2])
        elif not self.state.has_mask:
            raise RuntimeError("no mask yet: pass mask= (H×W uint8 object ids) with the first frame")
        elif self.state.frame_size != frame.shape[:2]:
            raise ValueError(
                f"frame size changed from {self.state.frame_size} to {frame.shape[:2]}; call reset() for a new stream"
            )
        st = self.state
        timings: dict[str, float] = {}
        clock = _Clock(timings, self.sync_timings, self.device)

        x = self.preprocess(frame)
        clock.lap("preprocess")

        flow = None
        if mask is not None:
            emb = self.backend.embed(x)
            clock.lap("embed")
            labels, ids = self._labels_from_mask(mask)
            st.object_ids, st.labels, st.frame_size = ids, labels, frame.shape[:2]
            out = mask.copy()
        else:
            prev = st.prev_embedding if self.cache_embeddings else self.backend.embed(st.prev_input)
            if self.backend.fused:
                emb, flow = self.backend.step(x, prev)
                clock.lap("embed_match")
            else:  # separate stages, timed separately
                emb = self.backend.embed(x)
                clock.lap("embed")
                flow = self.backend.match(prev, emb)
                clock.lap("match")
            st.labels = self.propagate(st.labels, flow, len(st.object_ids))
            clock.lap("propagate")
            out = self._ids_of(st.labels)
        clock.lap("postprocess")

        st.prev_embedding = emb
        st.prev_input = None if self.cache_embeddings else x
        st.frame_index += 1
        return StepResult(
            mask=out,
            frame_index=st.frame_index,
            object_ids=tuple(int(i) for i in st.object_ids.tolist()),
            timings_ms=timings,
            anchored=mask is not None,
            flow=flow,
        )

    # -- building blocks (public so backends and benchmarks can time them alone) ----------------------------
    def preprocess(self, frame: np.ndarray) -> Tensor:
        return to_model_input(frame, self.size, self.device)

    def propagate(self, labels: Tensor, flow: Tensor, num_classes: int) -> Tensor:
        """Warp one binary map per object (background included) by D4 and take the argmax."""
        if self.mask_resolution == "full" and labels.device.type == "cpu" and num_classes <= 256:
            return torch.from_numpy(self._remap.propagate(labels.numpy(), flow, num_classes))
        return propagate_labels(labels, flow, num_classes, self.mask_resolution)

    def _labels_from_mask(self, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        """Mask ids → uint8 indices into the sorted ids (≤ 256 classes, so indices fit in a byte)."""
        ids = np.union1d(np.unique(mask), [0]).astype(np.uint8)  # sorted, background first
        lut = np.zeros(256, dtype=np.uint8)
        lut[ids] = np.arange(len(ids))
        labels = torch.from_numpy(cv2.LUT(mask, lut)).to(self.device)
        return labels, torch.from_numpy(ids).to(self.device)

    def _ids_of(self, labels: Tensor) -> np.ndarray:
        """Indices → object ids, as an H×W uint8 array on the host."""
        ids = self.state.object_ids
        if labels.device.type == "cpu":
            lut = np.zeros(256, dtype=np.uint8)
            lut[: len(ids)] = ids.numpy()
            return cv2.LUT(labels.numpy().astype(np.uint8, copy=False), lut)
        return ids[labels.long()].cpu().numpy()

    # -- checks ----------------------------------------------------------------------------------------------
    @staticmethod
    def _check_frame(frame: object) -> None:
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"frame must be a numpy array (H×W×3 uint8 RGB), got {type(frame).__name__}")
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be H×W×3 RGB, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8, got {frame.dtype}")
        if frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(f"frame is empty, shape {frame.shape}")

    @staticmethod
    def _check_mask(mask: object, frame_hw: tuple[int, int]) -> None:
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy array (H×W uint8 object ids), got {type(mask).__name__}")
        if mask.ndim != 2:
            raise ValueError(f"mask must be H×W object ids, got shape {mask.shape}")
        if mask.dtype != np.uint8:
            raise ValueError(f"mask must be uint8 object ids, got {mask.dtype}")
        if mask.shape != tuple(frame_hw):
            raise ValueError(f"mask shape {mask.shape} does not match frame shape {tuple(frame_hw)}")


class _Clock:
    """Stage timer; synchronises CUDA only when asked, since a sync per stage costs throughput."""

    def __init__(self, out: dict[str, float], sync: bool, device: torch.device) -> None:
        self.out, self.sync, self.device = out, sync, device
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.sync:
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        self.out[name] = (t - self.t) * 1e3
        self.t = t
