"""One network forward for the frames of several streams: `BatchingBackend` gathers the `embed` calls that the
streams' steps make at the same time (on `rtvos.MultiTracker`'s shared pool) for one input shape and runs them
as one batch, then hands each step its own row.

Only the network's embedding is batched; DIS, the match, propagation and the appearance stage stay per stream.
The default model (DIS + appearance) has no network, so there is nothing to batch; with an RPM-Net network it is
``MultiTracker(batch=True)``. On CPU it is off by default: a pool with one thread per core already runs the
streams' batch-1 forwards side by side, and on a 2-core machine that was faster than one batched forward
(docs/serve.md, section 4).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from .backends import Backend

__all__ = ["BatchingBackend", "BATCHABLE"]

#: The backends whose embedding can run batched (the compiled ones replay fixed batch-1 graphs).
BATCHABLE = ("eager", "onnx")


@dataclass
class _Request:
    x: Tensor
    out: Tensor | None = None
    error: BaseException | None = None


class BatchingBackend(Backend):
    """``inner``'s embedding for up to ``max_batch`` concurrent callers as one forward. The first caller waits up
    to ``window_s`` for the others (or until ``max_batch`` have come), runs the batch and wakes them. ONNX
    graphs have a fixed batch: one export per (shape, batch), built at the first batch of that size."""

    name = "batched"
    fused = False  # embed (batched) and match (per stream) apart

    def __init__(self, inner: Backend, max_batch: int, window_s: float = 0.003) -> None:
        if inner.name not in BATCHABLE:
            raise ValueError(f"backend {inner.name!r} cannot run batched; use one of {BATCHABLE}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        super().__init__(inner.model, inner.size, inner.device, inner.precision)
        self.inner, self.max_batch, self.window_s = inner, int(max_batch), float(window_s)
        self.batches: Counter[int] = Counter()  # forwards run, by batch size
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._collecting = False
        self._count = threading.Lock()

    def embed(self, x: Tensor) -> Tensor:
        req = _Request(x)
        with self._cond:
            self._queue.append(req)
            if self._collecting:  # another caller gathers this batch
                self._cond.notify_all()
                while req.out is None and req.error is None:
                    self._cond.wait()
                return self._result(req)
            self._collecting = True
            deadline = time.perf_counter() + self.window_s
            while len(self._queue) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                self._cond.wait(left)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self._collecting = False
        try:
            out = self.forward(torch.cat([r.x for r in batch]))
            for i, r in enumerate(batch):
                r.out = out[i: i + 1]
        except BaseException as err:
            for r in batch:
                r.error = err
        with self._cond:
            self._cond.notify_all()
        return self._result(req)

    @staticmethod
    def _result(req: _Request) -> Tensor:
        if req.error is not None:
            raise req.error
        assert req.out is not None
        return req.out

    def forward(self, xs: Tensor) -> Tensor:
        """The embedding of N frames (N×3×h×w) in one call."""
        with self._count:
            self.batches[int(xs.shape[0])] += 1
        return self.inner.embed_batch(xs)

    def prepare(self) -> None:
        """Build every batch size now: an export traces the model, which must not happen while other streams'
        steps run it (`rtvos.MultiTracker` calls this with no step in flight)."""
        for n in range(2, self.max_batch + 1):
            self.inner.prepare_batch(n)

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        return self.inner.match(e_ref, e_tar, prior)  # per stream (a fused ONNX backend matches eagerly here)
