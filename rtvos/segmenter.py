"""Streaming segmentation: one `Segmenter` per model, fed one frame at a time, causal.

`Segmenter.step` only orchestrates four parts, each with one job (as Cutie's `InferenceCore` delegates to its
managers): the field source (DIS, the network or both: `rtvos.fields`), the propagator (`rtvos.propagation`),
the appearance stage (`rtvos.appearance`) and the object-id map (`rtvos.objects`). Everything that belongs to
one stream (the previous frame, its embedding, the scores, the appearance model, the ids) lives in a typed
`SegmenterState`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from .appearance import AppearanceStage, GridConfig, GridState
from .backends import Backend, resolve_device
from .common import APPEARANCE_MODES, AUTO, DEFAULT_APPEARANCE
from .fields import Field, FieldSource, check_size_spec, model_input_size, to_model_input
from .flow import FLOW_PRESETS, to_gray
from .models.flow_model import FlowModel
from .models.rpmnet import RPMNet
from .objects import ObjectIds
from .propagation import (
    MASK_RESOLUTIONS,
    PROPAGATION_MODES,
    Propagator,
    RemapPropagator,
    labels_from_scores,
    onehot_scores,
    propagate_labels,
    propagate_scores,
)
from .stats import Timer

__all__ = ["Segmenter", "SegmenterState", "StepResult", "to_model_input", "propagate_labels", "propagate_scores",
           "labels_from_scores", "RemapPropagator", "model_input_size", "DEFAULT_SIZE", "PROPAGATION_MODES"]

DEFAULT_SIZE = 512  # the paper's S, used when a checkpoint does not record the size it was trained at


@dataclass
class StepResult:
    mask: np.ndarray  # H×W uint8 object ids, the frame's own size
    frame_index: int
    object_ids: tuple[int, ...]  # ids present in the stream, background (0) first
    timings_ms: dict[str, float] = field(default_factory=dict)
    anchored: bool = False  # True when this frame's mask was given, not propagated
    flow: Tensor | None = None  # the network's f4 (N×2×S/4×S/4, dy/dx in S/4 px) for this mask; None otherwise
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
    ids: ObjectIds | None = None  # the anchor mask's ids, background first
    labels: Tensor | None = None  # (H, W) uint8 indices into the ids: the mask at t−1
    scores: np.ndarray | None = None  # K×H×W float32 object scores at t−1 (soft propagation); bg = 1 − sum
    prev_gray: np.ndarray | None = None  # frame t−1 in grey, for DIS
    prev_embedding: Tensor | None = None  # E(frame t−1), the cache that makes a step one embedding
    prev_input: Tensor | None = None  # preprocessed frame t−1, kept only when caching is off
    appearance: GridState | None = None  # the stream's appearance model (appearance="grid")
    prev_fb_gray: np.ndarray | None = None  # frame t−1 at the FB check's resolution

    @property
    def has_mask(self) -> bool:
        return self.labels is not None

    @property
    def object_ids(self) -> Tensor | None:
        """(K+1,) uint8 ids, background first (None before the first mask)."""
        return None if self.ids is None else self.ids.as_tensor(self.labels.device if self.labels is not None else "cpu")


class Segmenter:
    """`step(frame, mask=None)` per frame; a mask on the first frame (and optionally later, to re-anchor).

    ``model``: an `RPMNet` (RPM-Net's f4 carries the mask; a prior model adds its learned residual to a DIS
    prior), a `FlowModel` or None with ``flow_preset`` (DIS alone: no network). ``appearance="grid"`` fuses
    the propagated scores with a causal colour model (`rtvos.appearance`); "none" is propagation alone; None
    (default) is "grid" with soft propagation at frame resolution, where the stage applies, else "none".

    propagation="soft" carries per-object scores between frames (argmax only for the output); "hard" re-binarises
    every frame. mask_resolution="full" warps at frame resolution with the field upsampled (sharp boundaries);
    "model" warps at S/4 as the paper does and upsamples the scores. ``size`` is the network input's short side
    (the long side keeps the frame's aspect, `model_input_size`) or an explicit (H, W).
    """

    def __init__(
        self,
        model: RPMNet | FlowModel | None,
        size: int | tuple[int, int] | None = None,
        device: str | torch.device = AUTO,
        cache_embeddings: bool = True,
        mask_resolution: str = "full",
        sync_timings: bool = True,
        backend: str = "auto",
        precision: str = "fp32",
        propagation: str = "soft",
        flow_preset: str | None = None,
        appearance: str | None = None,
        appearance_config: GridConfig | None = None,
    ) -> None:
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ValueError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {mask_resolution!r}")
        if propagation not in PROPAGATION_MODES:
            raise ValueError(f"propagation must be one of {PROPAGATION_MODES}, got {propagation!r}")
        if appearance is None:  # the default wherever it applies: it fuses soft scores at frame resolution
            appearance = DEFAULT_APPEARANCE if propagation == "soft" and mask_resolution == "full" else "none"
        if appearance not in APPEARANCE_MODES:
            raise ValueError(f"appearance must be one of {APPEARANCE_MODES}, got {appearance!r}")
        if appearance != "none" and (propagation != "soft" or mask_resolution != "full"):
            raise ValueError("the appearance stage fuses soft scores at frame resolution: it needs propagation='soft' "
                             "and mask_resolution='full' (or appearance='none')")
        if isinstance(model, FlowModel):
            if flow_preset is not None and flow_preset != model.preset:
                raise ValueError(f"flow_preset {flow_preset!r} contradicts the model's own {model.preset!r}")
            self.flow_model: FlowModel | None = model
            flow_preset, model = model.preset, None
        else:
            self.flow_model = None
        if model is None:
            if flow_preset is None or flow_preset not in FLOW_PRESETS:
                raise ValueError(f"without a network, flow_preset must be one of {list(FLOW_PRESETS)}, got {flow_preset!r}")
            if mask_resolution != "full":
                raise ValueError("the DIS field is computed at frame resolution: mask_resolution must be 'full'")
        elif flow_preset is not None:
            raise ValueError("flow_preset is for DIS without a network; a prior model names its own preset")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device) if model is not None else None
        # None: the size the checkpoint was trained at (recorded in its meta), else the paper's 512.
        spec = size if size is not None else (int(cast(int, model.meta.get("size", DEFAULT_SIZE))) if model else DEFAULT_SIZE)
        preset = flow_preset if model is None else model.config.prior
        self.flow_preset = preset
        self.fields = FieldSource(self.model, preset, check_size_spec(spec), self.device, backend, precision,
                                  cache_embeddings)
        self.propagator = Propagator(propagation, mask_resolution)
        self.appearance = appearance
        self.appearance_stage = AppearanceStage(appearance_config) if appearance == "grid" else None
        self.sync_timings = sync_timings and self.device.type == "cuda"
        self.state = SegmenterState()
        if not isinstance(self.fields.size_spec, int):  # an explicit input size: build the backend now
            self.prepare(self.fields.size_spec)

    # -- settings and backends (delegated to the field source) -----------------------------------------------
    @property
    def size_spec(self) -> int | tuple[int, int]:
        return self.fields.size_spec

    @property
    def backend_name(self) -> str:
        return self.fields.backend_name

    @property
    def precision(self) -> str:
        return self.fields.precision

    @property
    def cache_embeddings(self) -> bool:
        return self.fields.cache_embeddings

    @property
    def propagation(self) -> str:
        return self.propagator.propagation

    @property
    def mask_resolution(self) -> str:
        return self.propagator.mask_resolution

    @property
    def has_network(self) -> bool:
        return self.model is not None

    def input_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input (h, w) for frames of this size."""
        return self.fields.input_size(frame_hw)

    def prepare(self, frame_hw: tuple[int, int]) -> Backend | None:
        """Build (or reuse) the backend for frames of this size: exports are keyed by shape. None without a model."""
        return self.fields.prepare(frame_hw)

    @property
    def size(self) -> tuple[int, int]:
        """The network input of the latest prepared frame size (or the explicit size); (S, S) before any."""
        return self.fields.size

    @property
    def backend(self) -> Backend:
        return self.fields.get_backend()

    @backend.setter
    def backend(self, value: Backend) -> None:  # benchmarks share one compiled unit between two Segmenters
        self.fields.set_backend(value)

    def preprocess(self, frame: np.ndarray) -> Tensor:
        return self.fields.preprocess(frame)

    def describe(self) -> str:
        """One line: what produces the field and what stages follow it."""
        if self.model is None:
            what = f"DIS {self.flow_preset}" + (f" ({self.flow_model.name})" if self.flow_model is not None else "")
        else:
            what = str(self.model.meta.get("source", "RPM-Net"))
        return f"{what}, {self.propagation} propagation, appearance {self.appearance}"

    def reset(self) -> None:
        """Forget the stream (cache, mask, ids, appearance); the next step needs a mask again."""
        if self.state.appearance is not None:
            AppearanceStage.wait(self.state.appearance)
        self.state = SegmenterState()

    def close(self) -> None:
        self.fields.close()

    def snapshot(self) -> bytes:
        """The stream's whole state as bytes (scores, appearance model, previous frame, ids): `restore` on a
        fresh Segmenter of the same settings continues exactly where this one is. A recovered stream that only
        re-anchors on its last mask loses the soft scores and the learned colours and drifts from the
        uninterrupted run; this is what makes it continue instead."""
        import dataclasses
        import pickle

        st = self.state
        if st.appearance is not None:
            AppearanceStage.wait(st.appearance)  # the rebuild running on a worker thread belongs to the state
        cpu = dataclasses.replace(
            st, appearance=None if st.appearance is None else dataclasses.replace(st.appearance, pending=None),
            labels=None if st.labels is None else st.labels.cpu(),
            prev_embedding=None if st.prev_embedding is None else st.prev_embedding.cpu(),
            prev_input=None if st.prev_input is None else st.prev_input.cpu())
        return pickle.dumps(cpu, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Continue from a `snapshot` (bytes this library made: they are unpickled, so never take them from an
        untrusted party)."""
        import pickle

        st = pickle.loads(blob)
        if not isinstance(st, SegmenterState):
            raise ValueError(f"not a Segmenter snapshot: got {type(st).__name__}")
        for name in ("labels", "prev_embedding", "prev_input"):
            t = getattr(st, name)
            if t is not None:
                setattr(st, name, t.to(self.device))
        self.reset()
        self.state = st

    # -- per frame -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None) -> StepResult:
        self._check_frame(frame)
        st = self.state
        if mask is not None:
            self._check_mask(mask, frame.shape[:2])
        elif not st.has_mask:
            raise RuntimeError("no mask yet: pass mask= (H×W uint8 object ids) with the first frame")
        elif st.frame_size != frame.shape[:2]:
            raise ValueError(
                f"frame size changed from {st.frame_size} to {frame.shape[:2]}; call reset() for a new stream"
            )
        timings: dict[str, float] = {}
        clock = Timer(self.device, sync=self.sync_timings, laps=timings)
        app = self.appearance_stage
        gray = to_gray(frame) if (self.flow_preset is not None or app is not None) else None
        fb_gray = app.fb_gray(cast(np.ndarray, gray)) if app is not None else None
        flow = None
        if mask is not None:
            self.fields.anchor(frame, gray, st, clock)
            ids = ObjectIds.from_mask(mask)
            labels = ids.to_indices(mask)
            st.ids, st.frame_size = ids, (int(frame.shape[0]), int(frame.shape[1]))
            st.labels = torch.from_numpy(labels).to(self.device)
            st.scores = onehot_scores(labels, len(ids)) if self.propagator.soft else None
            if app is not None:
                st.appearance = app.anchor(frame, labels, len(ids))
                clock.lap("appearance")
            out = mask.copy()
        else:
            ids = cast(ObjectIds, st.ids)
            pending_fb = app.start_forward(self.fields.submit, st.prev_fb_gray, fb_gray) if app is not None else None
            fld = self.fields.next(frame, gray, st, clock)
            flow = fld.flow
            st.labels, st.scores = self.propagator(cast(Tensor, st.labels), st.scores, fld.base, fld.flow, len(ids),
                                                   cast("tuple[int, int]", frame.shape[:2]), want_labels=app is None)
            clock.lap("propagate")
            if app is not None:
                st.scores = app(cast(GridState, st.appearance), frame, cast(np.ndarray, st.scores),
                                _cached_grid(fld), pending_fb, self.fields.submit, self.propagator.last_maps)
                st.labels = torch.from_numpy(labels_from_scores(st.scores)).to(self.device)
                clock.lap("appearance")
            out = ids.to_ids(st.labels)
        clock.lap("postprocess")
        st.prev_fb_gray = fb_gray
        st.frame_index += 1
        return StepResult(
            mask=out,
            frame_index=st.frame_index,
            object_ids=cast(ObjectIds, st.ids).as_tuple(),
            timings_ms=timings,
            anchored=mask is not None,
            flow=flow,
            object_scores=st.scores,
        )

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


def _cached_grid(fld: Field) -> Any:
    """``fld.on_grid`` memoised per grid size (the appearance stage asks for the working grid twice)."""
    cache: dict[tuple[int, int], np.ndarray] = {}

    def on(hw: tuple[int, int]) -> np.ndarray:
        key = (int(hw[0]), int(hw[1]))
        if key not in cache:
            cache[key] = fld.on_grid(key)
        return cache[key]

    return on
