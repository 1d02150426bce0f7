"""Streaming segmentation: one `Segmenter` per video, fed one frame at a time, causal.

The model holds weights only; everything that belongs to one stream (the cached embedding of frame t−1, the
mask at t−1, the object ids) lives in a typed `SegmenterState`, so one model can serve many streams.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import Backend, create_backend
from .flow import FLOW_PRESETS, DISFlow, field_to_grid, to_gray
from .models.rpmnet import SIZE_MULTIPLE, RPMNet, resize_flow, warp
from .stats import Timer

__all__ = ["Segmenter", "SegmenterState", "StepResult", "to_model_input", "propagate_labels", "propagate_scores",
           "model_input_size", "DEFAULT_SIZE", "PROPAGATION_MODES"]

PROPAGATION_MODES = ("soft", "hard")  # soft: per-object scores carried between frames; hard: labels only

DEFAULT_SIZE = 512  # the paper's S, used when a checkpoint does not record the size it was trained at

# Fused backends report "embed_match" instead of "embed" + "match" (one compiled unit per frame).
STAGES = ("preprocess", "flow", "embed", "match", "embed_match", "propagate", "postprocess")


@dataclass
class StepResult:
    mask: np.ndarray  # H×W uint8 object ids, the frame's own size
    frame_index: int
    object_ids: tuple[int, ...]  # ids present in the stream, background (0) first
    timings_ms: dict[str, float] = field(default_factory=dict)
    anchored: bool = False  # True when this frame's mask was given, not propagated
    flow: Tensor | None = None  # f4 (N×2×S/4×S/4, dy/dx in S/4 px) that produced this mask, None when anchored
    object_scores: np.ndarray | None = None  # K×H×W float32 soft scores of the objects (soft propagation)

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())

    @property
    def scores(self) -> np.ndarray | None:
        """(K+1)×H×W float32 per-class scores in [0, 1] summing to 1, background first (what argmax turned into
        `mask`); None with hard propagation."""
        if self.object_scores is None:
            return None
        bg = np.clip(1.0 - self.object_scores.sum(0, keepdims=True), 0.0, 1.0)
        return np.concatenate((bg, self.object_scores), 0)


@dataclass
class SegmenterState:
    frame_index: int = -1
    frame_size: tuple[int, int] | None = None  # (H, W) of the stream
    object_ids: Tensor | None = None  # (K+1,) uint8, object_ids[0] == 0
    labels: Tensor | None = None  # (H, W) uint8 indices into object_ids: the mask at t−1
    scores: np.ndarray | None = None  # K×H×W float32 object scores at t−1 (soft propagation); bg = 1 − sum
    prev_gray: np.ndarray | None = None  # frame t−1 in grey, for DIS (flow method and prior models)
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


def _check_size_spec(size: int | tuple[int, int]) -> int | tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        _as_size(int(size))
        return int(size)
    return _as_size(size)


def model_input_size(frame_hw: tuple[int, int], size: int | tuple[int, int]) -> tuple[int, int]:
    """The network input for a frame: an explicit (H, W) as given; an int is the *short* side, and the long side
    keeps the frame's aspect, rounded to the nearest multiple of 64 the network needs (never squashed to a
    square: a 854×480 frame at 128 becomes 128×256)."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        return _as_size(size)
    s = _as_size(int(size))[0]
    fh, fw = (max(1, int(v)) for v in frame_hw)
    long_side = max(SIZE_MULTIPLE, int(round(max(fh, fw) * s / min(fh, fw) / SIZE_MULTIPLE)) * SIZE_MULTIPLE)
    return (s, long_side) if fh <= fw else (long_side, s)


def to_model_input(
    frame: np.ndarray, size: int | tuple[int, int], device: str | torch.device = "cpu"
) -> Tensor:
    """H×W×3 uint8 → 1×3×h×w float in [0, 1] (`model_input_size`); resized on the CPU in uint8, where it is
    cheapest."""
    h, w = model_input_size(frame.shape[:2], size)
    if frame.shape[:2] != (h, w):
        shrink = frame.shape[0] > h and frame.shape[1] > w
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True)
    return x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def propagate_labels(labels: Tensor, flow: Tensor, num_classes: int, mask_resolution: str = "full") -> Tensor:
    """Reference propagation in PyTorch (any device): one-hot → D4 warp → argmax."""
    onehot = F.one_hot(labels.long(), num_classes).permute(2, 0, 1).unsqueeze(0).float()
    if mask_resolution == "full":
        scores = warp(onehot, resize_flow(flow, cast("tuple[int, int]", tuple(labels.shape))))
    else:
        small = F.interpolate(onehot, size=flow.shape[-2:], mode="area")
        scores = F.interpolate(warp(small, flow), size=labels.shape, mode="bilinear", align_corners=False)
    # Pixels that sample outside the image get all-zero scores: argmax picks index 0, the background.
    return scores[0].argmax(0)


def propagate_scores(scores: Tensor, field: Tensor) -> Tensor:
    """Reference soft propagation in PyTorch: K×H×W object scores warped by a 1×2×H×W (dy, dx) field in frame
    pixels (D4 at frame resolution). Sources outside the frame give 0, so their mass goes to the background,
    whose score is 1 − the objects' sum."""
    return warp(scores[None].float(), field)[0]


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """K×H×W object scores → H×W uint8 indices (0 = background, k = object k), argmax over (1 − sum, scores)."""
    if len(scores) == 1:
        return (scores[0] > 0.5).view(np.uint8)
    full = np.concatenate((1.0 - scores.sum(0, keepdims=True), scores), 0)
    return full.argmax(0).astype(np.uint8)


class RemapPropagator:
    """CPU fast path for full-resolution propagation: the same bilinear backward warp as `warp`, done by
    cv2.remap on fixed-point maps computed once per frame (≈10x grid_sample at 854x480).

    cv2.resize(INTER_LINEAR) and remap share grid_sample's convention (align_corners=False, pixel centres at
    integers, zero outside), so only remap's 1/32-pixel coordinate rounding (and, for hard labels, 8-bit
    scores) differs from `propagate_labels` / `propagate_scores`.
    """

    def __init__(self) -> None:
        self._grid: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _coords(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._grid is None or self._grid[0] != (h, w):
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = ((h, w), ys, xs)
        return self._grid[1], self._grid[2]

    def maps(self, h: int, w: int, flow: Tensor | None, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point remap maps for the field base (H×W×2 (dx, dy) in frame px, or 0) + flow (N×2×h×w (dy, dx)
        on any grid, resized and rescaled to the frame)."""
        ys, xs = self._coords(h, w)
        if flow is not None:
            f = flow[0].detach().float().cpu().numpy()
            fh, fw = f.shape[-2:]
            map_y = cv2.resize(f[0], (w, h), interpolation=cv2.INTER_LINEAR)
            map_y *= h / fh
            map_x = cv2.resize(f[1], (w, h), interpolation=cv2.INTER_LINEAR)
            map_x *= w / fw
            if base is not None:
                map_x += base[..., 0]
                map_y += base[..., 1]
        elif base is not None:
            map_x, map_y = base[..., 0].copy(), base[..., 1].copy()
        else:
            raise ValueError("maps: no field given")
        map_y += ys
        map_x += xs
        # Fixed-point maps: what remap uses internally for float maps anyway, computed once for all K maps.
        return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)

    @staticmethod
    def hard(labels: np.ndarray, maps: tuple[np.ndarray, np.ndarray], num_classes: int) -> np.ndarray:
        """labels: H×W indices (< 256); returns H×W uint8 indices (running argmax over 8-bit one-hot warps)."""
        h, w = labels.shape
        m1, m2 = maps
        lab8 = labels if labels.dtype == np.uint8 else labels.astype(np.uint8)
        best = idx = None
        for k in range(num_classes):
            onehot = np.equal(lab8, k).view(np.uint8) * np.uint8(255)  # (cv2.compare trips on 1×1 frames)
            score = cv2.remap(onehot, m1, m2, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            if best is None:
                best, idx = score, np.zeros((h, w), np.uint8)
                continue
            assert idx is not None  # set together with best on the first class
            better = score > best  # strict: ties keep the lower index, as argmax does
            idx[better] = k
            np.maximum(best, score, out=best)
        # All-zero scores (sampled outside the image) keep index 0, the background, as in the reference.
        return cast(np.ndarray, idx)

    @staticmethod
    def soft(scores: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """K×H×W float32 object scores → warped K×H×W (zero outside: that mass becomes background)."""
        m1, m2 = maps
        out = np.empty_like(scores)
        for k in range(len(scores)):
            cv2.remap(scores[k], m1, m2, cv2.INTER_LINEAR, dst=out[k], borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out


class Segmenter:
    """`step(frame, mask=None)` per frame; a mask on the first frame (and optionally later, to re-anchor).

    The displacement field that carries the mask from t−1 to t comes from the model (RPM-Net's f4; for a prior
    model, its DIS prior + the learned residual) or, with ``model=None``, from DIS alone (``flow_preset``): the
    classical baseline through exactly the same propagator.

    propagation="soft" carries per-object scores between frames (argmax only for the output); "hard" re-binarises
    every frame. mask_resolution="full" warps at frame resolution with the field upsampled (sharp boundaries);
    "model" warps at S/4 as the paper does and upsamples the scores. ``size`` is the network input's short side
    (the long side keeps the frame's aspect, `model_input_size`) or an explicit (H, W).
    """

    def __init__(
        self,
        model: RPMNet | None,
        size: int | tuple[int, int] | None = None,
        device: str | torch.device = "cpu",
        cache_embeddings: bool = True,
        mask_resolution: str = "full",
        sync_timings: bool = True,
        backend: str = "eager",
        precision: str = "fp32",
        propagation: str = "soft",
        flow_preset: str | None = None,
    ) -> None:
        if mask_resolution not in ("full", "model"):
            raise ValueError(f"mask_resolution must be 'full' or 'model', got {mask_resolution!r}")
        if propagation not in PROPAGATION_MODES:
            raise ValueError(f"propagation must be one of {PROPAGATION_MODES}, got {propagation!r}")
        if model is None:
            if flow_preset is None or flow_preset not in FLOW_PRESETS:
                raise ValueError(f"without a model, flow_preset must be one of {list(FLOW_PRESETS)}, got {flow_preset!r}")
            if mask_resolution != "full":
                raise ValueError("the DIS field is computed at frame resolution: mask_resolution must be 'full'")
        elif flow_preset is not None:
            raise ValueError("flow_preset is for model=None (the DIS baseline); a prior model names its own preset")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device) if model is not None else None
        # None: the size the checkpoint was trained at (recorded in its meta), else the paper's 512.
        spec = size if size is not None else (int(cast(int, model.meta.get("size", DEFAULT_SIZE))) if model else DEFAULT_SIZE)
        self.size_spec = _check_size_spec(spec)
        from .backends import AUTO, list_backends

        if backend != AUTO and backend not in list_backends():  # fail now, not at the first frame
            raise ValueError(f"unknown backend {backend!r}; expected one of {[AUTO, *list_backends()]}")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        self.backend_name, self.precision = backend, precision
        self._backends: dict[tuple[int, int], Backend] = {}
        self._current: tuple[int, int] | None = None
        self.cache_embeddings = cache_embeddings
        self.mask_resolution = mask_resolution
        self.propagation = propagation
        preset = flow_preset if model is None else model.config.prior
        self.flow_preset = preset
        self._dis = DISFlow(preset) if preset is not None else None
        self._pool: ThreadPoolExecutor | None = None  # DIS beside the embedding (prior models)
        self.sync_timings = sync_timings and self.device.type == "cuda"
        self.state = SegmenterState()
        self._remap = RemapPropagator()  # scratch (coordinate grid), not stream state
        if not isinstance(self.size_spec, int):  # an explicit input size: build the backend now
            self.prepare(self.size_spec)

    # -- geometry and backends -------------------------------------------------------------------------------
    def input_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input (h, w) for frames of this size."""
        return model_input_size(frame_hw, self.size_spec)

    def prepare(self, frame_hw: tuple[int, int]) -> Backend | None:
        """Build (or reuse) the backend for frames of this size: exports are keyed by shape. None without a model."""
        if self.model is None:
            return None
        hw = self.input_size(frame_hw)
        if hw not in self._backends:
            self._backends[hw] = create_backend(self.backend_name, self.model, hw, self.device, self.precision)
        self._current = hw
        return self._backends[hw]

    @property
    def size(self) -> tuple[int, int]:
        """The network input of the latest prepared frame size (or the explicit size); (S, S) before any."""
        if self._current is not None:
            return self._current
        return self.size_spec if isinstance(self.size_spec, tuple) else (self.size_spec, self.size_spec)

    @property
    def backend(self) -> Backend:
        b = self._backends.get(self.size)
        if b is None:
            b = self.prepare(self.size)
        if b is None:
            raise RuntimeError("this Segmenter runs DIS only (model=None): it has no network backend")
        return b

    @backend.setter
    def backend(self, value: Backend) -> None:  # benchmarks share one compiled unit between two Segmenters
        self._current = tuple(value.size)  # type: ignore[assignment]
        self._backends[self._current] = value  # type: ignore[index]

    def reset(self) -> None:
        """Forget the stream (cache, mask, ids); the next step needs a mask again."""
        self.state = SegmenterState()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

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
        clock = Timer(self.device, sync=self.sync_timings, laps=timings)
        h, w = frame.shape[:2]

        gray = to_gray(frame) if self._dis is not None else None
        pending = None
        if mask is None and self._dis is not None and self.model is not None:  # DIS beside the embedding
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="rtvos-dis")
            pending = self._pool.submit(self._dis, cast(np.ndarray, gray), cast(np.ndarray, st.prev_gray))
        x = None
        if self.model is not None:
            backend = self.prepare((h, w))
            x = self.preprocess(frame)
        clock.lap("preprocess")

        flow = None
        if mask is not None:
            emb = None
            if self.model is not None:
                assert backend is not None and x is not None  # both set above whenever there is a model
                emb = backend.embed(x)
            clock.lap("embed")
            labels, ids = self._labels_from_mask(mask)
            st.object_ids, st.labels, st.frame_size = ids, labels, frame.shape[:2]
            st.scores = self._onehot_scores(labels, len(ids)) if self.propagation == "soft" else None
            out = mask.copy()
        else:
            dis_field = None
            if self.model is None:
                dis_field = self._dis(gray, st.prev_gray)  # type: ignore[misc, arg-type]
                clock.lap("flow")
                emb = None
            else:
                assert backend is not None and x is not None  # both set above whenever there is a model
                prev = cast(Tensor, st.prev_embedding if self.cache_embeddings else backend.embed(cast(Tensor, st.prev_input)))
                prior = None
                if pending is not None or not backend.fused:
                    emb = backend.embed(x)
                    clock.lap("embed")
                    if pending is not None:
                        dis_field = pending.result()
                        clock.lap("flow")
                        prior = self._field_to_grid(dis_field, cast("tuple[int, int]", emb.shape[-2:]))
                    flow = backend.match(prev, emb, prior)
                    clock.lap("match")
                else:
                    emb, flow = backend.step(x, prev)
                    clock.lap("embed_match")
            # A prior model's output is the residual around its DIS prior: both are added at frame resolution.
            assert st.object_ids is not None and st.labels is not None  # has_mask, checked above
            self._propagate(dis_field, flow, len(st.object_ids), (h, w))
            clock.lap("propagate")
            out = self._ids_of(st.labels)
        clock.lap("postprocess")

        st.prev_embedding = emb
        st.prev_input = None if self.cache_embeddings else x
        st.prev_gray = gray
        st.frame_index += 1
        return StepResult(
            mask=out,
            frame_index=st.frame_index,
            object_ids=tuple(int(i) for i in st.object_ids.tolist()),
            timings_ms=timings,
            anchored=mask is not None,
            flow=flow,
            object_scores=st.scores,
        )

    # -- building blocks (public so backends and benchmarks can time them alone) ----------------------------
    def preprocess(self, frame: np.ndarray) -> Tensor:
        return to_model_input(frame, self.input_size(frame.shape[:2]), self.device)

    def _field_to_grid(self, field: np.ndarray, grid: tuple[int, int]) -> Tensor:
        """The DIS prior in the model's layout on its S/4 grid (`rtvos.flow.field_to_grid`), on the device."""
        return torch.from_numpy(field_to_grid(field, grid)).unsqueeze(0).to(self.device)

    def _propagate(self, base: np.ndarray | None, flow: Tensor | None, num_classes: int, hw: tuple[int, int]) -> None:
        """Carry the stream's mask (and scores) from t−1 to t by the field base (frame px) + flow (S/4 grid)."""
        st = self.state
        assert st.labels is not None  # step() propagates only once a mask has been given
        if self.mask_resolution == "full" and st.labels.device.type == "cpu" and num_classes <= 256:
            maps = self._remap.maps(hw[0], hw[1], flow, base)
            if self.propagation == "soft":
                st.scores = self._remap.soft(cast(np.ndarray, st.scores), maps)
                st.labels = torch.from_numpy(labels_from_scores(st.scores))
            else:
                st.labels = torch.from_numpy(self._remap.hard(st.labels.numpy(), maps, num_classes))
            return
        if self.mask_resolution == "full":
            field = resize_flow(flow, hw) if flow is not None else torch.zeros(1, 2, *hw, device=self.device)
            if base is not None:
                field = field + torch.from_numpy(base[..., ::-1].copy()).permute(2, 0, 1)[None].to(field)
            if self.propagation == "soft":
                sc = propagate_scores(torch.from_numpy(st.scores).to(self.device), field)
                st.scores = sc.cpu().numpy()
                st.labels = torch.from_numpy(labels_from_scores(st.scores)).to(self.device)
            else:
                st.labels = propagate_labels(st.labels, field, num_classes, "full").to(torch.uint8)
            return
        # The paper's S/4 propagation (model fields only).
        assert flow is not None  # mask_resolution="model" requires a model, and a model step always gives f4
        if self.propagation == "soft":
            sc = torch.from_numpy(st.scores).to(self.device)[None]
            small = F.interpolate(sc, size=flow.shape[-2:], mode="area")
            sc = F.interpolate(warp(small, flow), size=hw, mode="bilinear", align_corners=False)[0]
            st.scores = sc.clamp_(0, 1).cpu().numpy()
            st.labels = torch.from_numpy(labels_from_scores(st.scores)).to(self.device)
        else:
            st.labels = propagate_labels(st.labels, flow, num_classes, "model").to(torch.uint8)

    @staticmethod
    def _onehot_scores(labels: Tensor, num_classes: int) -> np.ndarray:
        lab = labels.cpu().numpy()
        return np.stack([(lab == k).astype(np.float32) for k in range(1, num_classes)]) if num_classes > 1 else \
            np.zeros((0, *lab.shape), np.float32)

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
        assert ids is not None  # only called once a mask (and so its ids) has been given
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
