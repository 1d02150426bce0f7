"""Prometheus metrics of `rtvos serve` (prometheus_client): per-stream counters and gauges read from the
engine's status at scrape time (nothing per frame), plus a latency histogram observed per frame."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StatusCollector(Collector):
    def __init__(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        rows = self._status()
        fps = GaugeMetricFamily("rtvos_stream_fps", "recent output frame rate", labels=["stream"])
        up = GaugeMetricFamily("rtvos_stream_up", "1 while the stream runs, else 0", labels=["stream", "state"])
        counters = {k: CounterMetricFamily(f"rtvos_stream_{k}", help_, labels=["stream"]) for k, help_ in (
            ("frames", "frames written by every sink"), ("dropped", "frames lost before the model"),
            ("reconnects", "source reconnects"), ("restarts", "worker restarts the stream re-anchored after"))}
        for r in rows:
            sid = r["id"]
            if r.get("fps") is not None:
                fps.add_metric([sid], r["fps"])
            up.add_metric([sid, r["state"]], 1.0 if r["state"] in ("starting", "running") else 0.0)
            for k, fam in counters.items():
                fam.add_metric([sid], float(r.get(k) or 0))
        yield fps
        yield up
        yield from counters.values()


class Metrics:
    """One registry per service (tests run several in a process; the global registry would collide)."""

    def __init__(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("rtvos_stream_latency_seconds", "capture (or decode) to model output",
                                 ["stream"], registry=self.registry, buckets=_BUCKETS)
        self.registry.register(_StatusCollector(status))

    def observe(self, stream_id: str, seconds: float) -> None:
        self.latency.labels(stream_id).observe(seconds)

    def forget(self, stream_id: str) -> None:
        """Drop a removed stream's series (add/remove forever keeps the registry flat)."""
        try:
            self.latency.remove(stream_id)
        except KeyError:
            pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
