"""Where each frame's displacement field comes from: DIS alone, RPM-Net's f4, or DIS prior + learned residual.

`FieldSource` owns what is shared by every stream of one Segmenter (the network backends, one per input shape,
and a small thread pool that runs DIS beside the network); what belongs to one stream (the previous frame's grey
image and embedding) lives in the `SegmenterState` it is handed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, cast

import cv2
import numpy as np
import torch
from torch import Tensor

from .backends import AUTO, Backend, create_backend, list_backends
from .common import check_precision
from .flow import DISFlow, field_to_grid, resize_field
from .models.rpmnet import SIZE_MULTIPLE, RPMNet
from .stats import Timer

__all__ = ["Field", "FieldSource", "model_input_size", "to_model_input"]


class _StreamFields(Protocol):  # what FieldSource reads and writes of a stream's state
    prev_gray: np.ndarray | None
    prev_embedding: Tensor | None
    prev_input: Tensor | None


@dataclass
class Field:
    """The field that carries frame t−1 to t: ``base`` (H×W×2 (dx, dy), frame px: DIS) + ``flow`` (1×2×h×w
    (dy, dx) on the model's grid: the network); either may be None."""

    base: np.ndarray | None = None
    flow: Tensor | None = None

    def on_grid(self, hw: tuple[int, int]) -> np.ndarray:
        """The total field resampled to an h×w grid, h×w×2 (dx, dy) in that grid's px."""
        if self.flow is None and self.base is not None and self.base.shape[:2] == tuple(hw):
            return self.base  # callers must not write into it
        out = resize_field(self.base, hw) if self.base is not None else np.zeros((*hw, 2), np.float32)
        if self.flow is not None:
            f = self.flow[0].detach().float().cpu().numpy()
            fh, fw = f.shape[-2:]
            out[..., 0] += cv2.resize(f[1], (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR) * (hw[1] / fw)
            out[..., 1] += cv2.resize(f[0], (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR) * (hw[0] / fh)
        return out


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or any(s <= 0 or s % SIZE_MULTIPLE for s in hw):
        raise ValueError(f"size must be a positive multiple of {SIZE_MULTIPLE} (or a pair of them), got {size!r}")
    return hw  # type: ignore[return-value]


def check_size_spec(size: int | tuple[int, int]) -> int | tuple[int, int]:
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


def to_model_input(frame: np.ndarray, size: int | tuple[int, int], device: str | torch.device = "cpu") -> Tensor:
    """H×W×3 uint8 → 1×3×h×w float in [0, 1] (`model_input_size`); resized on the CPU in uint8, where it is
    cheapest."""
    h, w = model_input_size(frame.shape[:2], size)
    if frame.shape[:2] != (h, w):
        shrink = frame.shape[0] > h and frame.shape[1] > w
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True)
    return x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


class FieldSource:
    """DIS (``preset``), the network (``model``), or both (a prior model: DIS runs on a worker thread while the
    network embeds the frame, then the matching refines the DIS prior)."""

    def __init__(self, model: RPMNet | None, preset: str | None, size_spec: int | tuple[int, int],
                 device: torch.device, backend: str, precision: str, cache_embeddings: bool) -> None:
        if model is None and preset is None:
            raise ValueError("a field needs a model, a DIS preset or both")
        if backend != AUTO and backend not in list_backends():  # fail now, not at the first frame
            raise ValueError(f"unknown backend {backend!r}; expected one of {[AUTO, *list_backends()]}")
        self.model, self.preset, self.device = model, preset, device
        self.size_spec = check_size_spec(size_spec)
        self.backend_name, self.precision = backend, check_precision(precision)
        self.cache_embeddings = cache_embeddings
        self._dis = DISFlow(preset) if preset is not None else None
        self._backends: dict[tuple[int, int], Backend] = {}
        self._current: tuple[int, int] | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- geometry and backends -------------------------------------------------------------------------------
    def input_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
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
        if self._current is not None:
            return self._current
        return self.size_spec if isinstance(self.size_spec, tuple) else (self.size_spec, self.size_spec)

    def get_backend(self) -> Backend:
        b = self._backends.get(self.size)
        if b is None:
            b = self.prepare(self.size)
        if b is None:
            raise RuntimeError("this Segmenter runs DIS only (no network model): it has no network backend")
        return b

    def set_backend(self, value: Backend) -> None:
        self._current = cast("tuple[int, int]", tuple(value.size))
        self._backends[self._current] = value

    def preprocess(self, frame: np.ndarray) -> Tensor:
        return to_model_input(frame, self.input_size(frame.shape[:2]), self.device)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run fn on the source's worker threads (DIS calls release the GIL)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="rtvos-dis")
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- per frame -------------------------------------------------------------------------------------------
    def anchor(self, frame: np.ndarray, gray: np.ndarray | None, st: _StreamFields, clock: Timer) -> None:
        """An anchor frame: nothing to match, but the next step needs its grey image and embedding."""
        x = emb = None
        if self.model is not None:
            backend = cast(Backend, self.prepare(frame.shape[:2]))
            x = self.preprocess(frame)
            clock.lap("preprocess")
            emb = backend.embed(x)
            clock.lap("embed")
        self._keep(st, gray, x, emb)

    def next(self, frame: np.ndarray, gray: np.ndarray | None, st: _StreamFields, clock: Timer) -> Field:
        """The field from the previous frame of the stream to this one."""
        if self.model is None:
            dis = cast(DISFlow, self._dis)(cast(np.ndarray, gray), cast(np.ndarray, st.prev_gray))
            clock.lap("flow")
            self._keep(st, gray, None, None)
            return Field(base=dis)
        pending = None
        if self._dis is not None:  # DIS beside the embedding
            pending = self.submit(self._dis, cast(np.ndarray, gray), cast(np.ndarray, st.prev_gray))
        backend = cast(Backend, self.prepare(frame.shape[:2]))
        x = self.preprocess(frame)
        clock.lap("preprocess")
        prev = cast(Tensor, st.prev_embedding if self.cache_embeddings else backend.embed(cast(Tensor, st.prev_input)))
        base: np.ndarray | None = None
        if pending is not None or not backend.fused:
            emb = backend.embed(x)
            clock.lap("embed")
            prior = None
            if pending is not None:
                base = pending.result()
                clock.lap("flow")
                prior = torch.from_numpy(field_to_grid(base, cast("tuple[int, int]", tuple(emb.shape[-2:]))))
                prior = prior.unsqueeze(0).to(self.device)
            flow = backend.match(prev, emb, prior)
            clock.lap("match")
        else:
            emb, flow = backend.step(x, prev)
            clock.lap("embed_match")
        self._keep(st, gray, x, emb)
        return Field(base=base, flow=flow)

    def _keep(self, st: _StreamFields, gray: np.ndarray | None, x: Tensor | None, emb: Tensor | None) -> None:
        st.prev_gray = gray
        st.prev_embedding = emb
        st.prev_input = None if self.cache_embeddings else x
