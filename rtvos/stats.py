"""Statistics and timing shared by the library: one percentile definition, one latency summary, one reservoir
sample for unbounded streams, and one device-aware timer (`Segmenter` stage laps, the pipeline's decode time,
`rtvos bench` and the benchmarks/ scripts all use these, so every reported number is measured the same way).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Reservoir", "Timer", "percentile", "summarize"]


def percentile(samples: Sequence[float] | np.ndarray, q: float) -> float:
    """q-th percentile (0..100) by linear interpolation between order statistics (numpy's default method)."""
    xs = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    if xs.size == 0:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    pos = (xs.size - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, xs.size - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """n, mean, p50/p95/p99, min, max of latencies in ms."""
    xs = np.asarray(samples_ms, dtype=np.float64)
    if xs.size == 0:
        raise ValueError("no samples to summarize")
    return {
        "n": int(xs.size),
        "mean_ms": float(xs.mean()),
        "p50_ms": percentile(xs, 50),
        "p95_ms": percentile(xs, 95),
        "p99_ms": percentile(xs, 99),
        "min_ms": float(xs.min()),
        "max_ms": float(xs.max()),
    }


class Reservoir:
    """A uniform sample of at most ``capacity`` values from a stream of any length (Vitter's algorithm R).

    Percentiles of the sample estimate those of the whole run in constant memory.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self._values = np.empty(self.capacity, dtype=np.float64)
        self._rng = random.Random(seed)
        self.count = 0  # values offered so far

    def add(self, value: float) -> None:
        if self.count < self.capacity:
            self._values[self.count] = value
        else:
            j = self._rng.randrange(self.count + 1)
            if j < self.capacity:
                self._values[j] = value
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def values(self) -> np.ndarray:
        """The sample (a copy), in no particular order."""
        return self._values[: len(self)].copy()

    def percentile(self, q: float) -> float | None:
        n = len(self)
        return percentile(self._values[:n], q) if n else None


class Timer:
    """The library's one clock: stage laps, single-call timing and per-stage sample lists.

    * ``now_ns()``: host ``perf_counter_ns``; with ``sync`` (default: on CUDA devices) it synchronises the device
      first, so a reading covers the GPU work queued before it.
    * ``start()`` then ``lap(name)`` after each stage: the ms since the previous lap, stored in ``laps[name]``
      (the last value; pass your own dict as ``laps`` to fill it) and, with ``keep=True``, appended to
      ``samples[name]``; ``add(name, ms)`` records a lap measured elsewhere.
    * ``time(fn)``: (result, ms) of one call; CUDA events on a GPU (device timeline), perf_counter_ns on CPU.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        *,
        sync: bool | None = None,
        laps: dict[str, float] | None = None,
        keep: bool = False,
    ) -> None:
        self.device = torch.device("cpu" if device is None else device)
        self.cuda = self.device.type == "cuda"
        self.sync = self.cuda if sync is None else bool(sync) and self.cuda
        self.laps: dict[str, float] = {} if laps is None else laps
        self.keep = keep
        self.samples: dict[str, list[float]] = {}
        self._t = time.perf_counter_ns()  # no sync here: start() is the synchronised start

    @property
    def method(self) -> str:
        """How ``now_ns``/``lap`` read time."""
        return "torch.cuda.synchronize + perf_counter_ns" if self.sync else "perf_counter_ns"

    @property
    def call_method(self) -> str:
        """How ``time(fn)`` reads time."""
        return "CUDA events" if self.cuda else "perf_counter_ns"

    def now_ns(self) -> int:
        if self.sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter_ns()

    def start(self) -> None:
        self._t = self.now_ns()

    def lap(self, name: str) -> float:
        t = self.now_ns()
        ms = (t - self._t) / 1e6
        self._t = t
        self.add(name, ms)
        return ms

    def add(self, name: str, ms: float) -> None:
        self.laps[name] = float(ms)
        if self.keep:
            self.samples.setdefault(name, []).append(float(ms))

    def time(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return out, float(start.elapsed_time(end))
        t = time.perf_counter_ns()
        out = fn()
        return out, (time.perf_counter_ns() - t) / 1e6

    def summary(self) -> dict[str, dict[str, float | int]]:
        """``summarize`` of every kept stage (needs ``keep=True``)."""
        return {name: summarize(v) for name, v in self.samples.items() if v}
