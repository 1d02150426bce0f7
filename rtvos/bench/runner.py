"""The runner of `rtvos bench`: the configuration, the source, and the passes.

* the whole pipeline, through `rtvos.pipeline.Pipeline` (the class `rtvos segment` runs) with the CLI's sinks
  (PNG masks, overlay + H.264): `threaded=False` for the per-stage, per-frame latency view (decode, step and
  sinks on one thread; stage times are the pipeline's own `SegmentedFrame.stages_ms`), then `threaded=True`
  (reader thread → model → writer thread) for the fps a user gets;
* cached vs uncached `Segmenter.step`, interleaved frame by frame (the model alone, not the pipeline);
* every requested backend's step latency beside its mask IoU against eager fp32; optionally DIS flow;
* the compute floor (FLOPs of one cached step over the measured matmul peak).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..backends import resolve_backend, resolve_device
from ..common import AUTO, BUILTIN_BACKENDS, check_precision, one_line, stage_order
from ..data.sample import sample_clip_paths
from ..io import DAVIS_PALETTE, Frame, FrameSourceBase, InputError, open_source, read_mask
from ..stats import Timer, summarize
from .flops import count_step_flops, measure_peak_gflops
from .machine import loadavg, machine_info, versions
from .schema import SCHEMA_ID

__all__ = ["BenchConfig", "FrameLoop", "mask_iou", "run_benchmark"]

NET_STAGES = ("embed", "match", "embed_match")  # the network part of a step, what the compute floor bounds
#: Environment variables that steer thread pools, recorded with every result.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
              "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")
#: Masks of the eager reference are kept for IoU up to this many bytes (frames beyond are not compared).
REFERENCE_MASK_BUDGET = 512 << 20


# ---------------------------------------------------------------------------------------------------------------
# accuracy beside speed
# ---------------------------------------------------------------------------------------------------------------
def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU over the object ids (non-zero) present in either mask; 1.0 when both are all background."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    joint = np.bincount(a.astype(np.int64).ravel() * 256 + b.astype(np.int64).ravel(), minlength=65536)
    conf = joint.reshape(256, 256)
    inter = np.diag(conf)[1:].astype(np.float64)
    union = conf.sum(1)[1:] + conf.sum(0)[1:] - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


# ---------------------------------------------------------------------------------------------------------------
# configuration and sources
# ---------------------------------------------------------------------------------------------------------------
def _parse_wxh(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise InputError(f"synthetic size must be WxH with W, H >= 16 (e.g. 854x480), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class BenchConfig:
    source: str | None = None  # file, folder, "synthetic:WxH", or None for the shipped sample
    synthetic: str | None = None  # "WxH": a generated clip instead of source
    mask: str | None = None
    model: str = "default"
    backends: tuple[str, ...] = ("auto",)  # what `rtvos segment` runs
    precision: str = "fp32"
    size: int | None = None
    frames: int = 100
    warmup: int = 5
    threads: int | None = None
    device: str = "auto"  # what `rtvos segment` runs: the first CUDA device when usable, else the CPU
    mask_resolution: str = "full"
    compare_flow: bool = False
    flops: bool = True
    synthetic_objects: int = 2

    def synthetic_size(self) -> tuple[int, int] | None:
        spec = self.synthetic
        if self.source is not None and str(self.source).startswith("synthetic:"):
            from_source = str(self.source).split(":", 1)[1]
            if spec is not None and _parse_wxh(spec) != _parse_wxh(from_source):
                raise InputError(f"two synthetic sizes given: {self.source} and --synthetic {spec}")
            spec = from_source
        elif spec is not None and self.source is not None:
            raise InputError(f"give either SOURCE ({self.source}) or --synthetic {spec}, not both")
        return None if spec is None else _parse_wxh(spec)

    def torch_device(self) -> torch.device:
        """The device measured: "auto" resolves as `rtvos segment` does (rtvos.backends.resolve_device)."""
        return resolve_device(self.device)

    def check(self) -> None:
        """Every bad value as one InputError line, before anything slow runs."""
        if not self.backends:
            raise InputError("no backend given; expected one or more of " + ", ".join(BUILTIN_BACKENDS))
        for b in self.backends:
            if b not in (*BUILTIN_BACKENDS, AUTO):
                raise InputError(f"unknown backend {b!r}; expected one or more of "
                                 f"{', '.join((*BUILTIN_BACKENDS, AUTO))}")
        try:
            check_precision(self.precision)
        except ValueError as e:
            raise InputError(str(e)) from None
        if self.size is not None and (self.size <= 0 or self.size % 64):
            raise InputError(f"--size must be a positive multiple of 64, got {self.size}")
        if self.frames < 1:
            raise InputError(f"--frames must be >= 1, got {self.frames}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.mask_resolution not in ("full", "model"):
            raise InputError(f"mask resolution must be full or model, got {self.mask_resolution!r}")
        try:
            dev = self.torch_device()
        except (RuntimeError, ValueError):
            raise InputError(f"invalid --device {self.device!r} (e.g. auto, cpu, cuda, cuda:0)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {self.device}: CUDA is not available here (torch.cuda.is_available() is False)")
        if dev.type not in ("cpu", "cuda"):
            raise InputError(f"--device {self.device}: only cpu and cuda are benchmarked")
        self.synthetic_size()
        if self.source is not None and not str(self.source).startswith("synthetic:") and not Path(self.source).exists():
            raise InputError(f"no such file or folder: {self.source}")
        if self.mask is not None and not Path(self.mask).is_file():
            raise InputError(f"no such mask file: {self.mask}")


@dataclass
class _Source:
    path: Path  # a video file or frame folder, decoded for real in every pass
    first_mask: np.ndarray
    palette: np.ndarray
    description: str
    mask_description: str


def _prepare_source(config: BenchConfig, workdir: Path) -> _Source:
    wh = config.synthetic_size()
    if wh is not None:
        from ..data.synthetic import make_synthetic_clip, write_synthetic_clip

        w, h = wh
        # A real H.264 file, so decode is measured for real; longer runs loop over it.
        n = min(1 + config.warmup + config.frames, 120)
        clip = make_synthetic_clip(n, h, w, num_objects=config.synthetic_objects, seed=0)
        paths = write_synthetic_clip(clip, workdir / "synthetic", as_video=True, as_frames=False)
        assert paths.video is not None
        return _Source(paths.video, clip.masks[0], clip.palette, f"synthetic:{w}x{h} ({n} frames, H.264)",
                       f"synthetic ground truth ({config.synthetic_objects} objects)")
    if config.source is None:
        video, mask_path = sample_clip_paths()
        mask_path = Path(config.mask) if config.mask else mask_path
        first, palette = read_mask(mask_path)
        return _Source(video, first, palette, f"sample clip {video.name}", str(mask_path))
    path = Path(config.source)
    with open_source(path) as src:
        h, w = src.size
    if config.mask:
        first, palette = read_mask(config.mask)
        desc = str(config.mask)
    else:  # the mask's content does not change the cost much; its object count does (one here)
        first = np.zeros((h, w), np.uint8)
        first[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 1
        palette, desc = DAVIS_PALETTE.copy(), "centred box, 1 object (no --mask given)"
    if first.shape != (h, w):
        raise InputError(f"mask {config.mask} is {first.shape[1]}x{first.shape[0]} but {path} is {w}x{h}")
    return _Source(path, first, palette, str(path), desc)


class FrameLoop(FrameSourceBase):
    """A video/folder decoded for real, re-opened at its end (untimed) for as long as a run needs frames; every
    pass re-decodes instead of keeping frames in memory.

    Two ways in, one loop: iterate it as the Pipeline's source (`Frame` objects; the re-open time is recorded
    per frame in ``reopen_ms`` so the bench keeps it out of "decode"), or call ``next(clock)`` for (RGB image,
    decode ms) when stepping a Segmenter directly.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._src = open_source(path)
        self.name, self.fps, self.size = path.name, self._src.fps, self._src.size
        self.num_frames = None  # loops until the run stops reading
        self.loops = 0
        self.reopen_ms: dict[int, float] = {}  # frame number (SegmentedFrame.frame_index) → re-open ms
        self._it: Iterator[Frame] | None = None
        self._taken = 0  # frames handed out by next()

    def __iter__(self) -> Iterator[Frame]:
        n = 0
        while True:
            start = n
            for frame in self._src:
                yield frame
                n += 1
            if n == start:
                return
            t = time.perf_counter_ns()
            self._src.close()
            self._src = open_source(self.path)
            self.loops += 1
            self.reopen_ms[n] = (time.perf_counter_ns() - t) / 1e6

    def next(self, clock: Timer | None = None) -> tuple[np.ndarray, float]:
        """The next frame's image and its decode time in ms (0.0 without a clock), re-opening excluded."""
        if self._it is None:
            self._it = iter(self)
        n = self._taken
        t = clock.now_ns() if clock else 0
        frame = next(self._it)
        ms = (clock.now_ns() - t) / 1e6 if clock else 0.0
        self._taken = n + 1
        return frame.image, max(0.0, ms - self.reopen_ms.get(n, 0.0))

    def close(self) -> None:
        self._src.close()


# ---------------------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------------------
def _make_segmenter(model: Any, config: BenchConfig, backend: str, precision: str, frame_hw: tuple[int, int],
                    cache: bool = True) -> Any:
    from ..segmenter import Segmenter

    # ONNX Runtime follows torch's thread count, which --threads has already set.
    seg = Segmenter(model, config.size, config.torch_device(), cache_embeddings=cache,
                    mask_resolution=config.mask_resolution, backend=backend, precision=precision)
    seg.prepare(frame_hw)  # build (export) the backend for this source's input shape before anything is timed
    return seg


def _bench_sinks(out: Path, palette: np.ndarray) -> list[Any]:
    """The sinks of `rtvos segment`'s default outputs, in its order: PNG masks, then overlay MP4 (H.264)."""
    from ..io.sinks import MaskSink, VideoSink

    shutil.rmtree(out, ignore_errors=True)
    return [MaskSink(out / "masks", palette), VideoSink(out / "overlay.mp4")]


def _sequential_pass(seg: Any, source: _Source, config: BenchConfig, workdir: Path, clock: Timer,
                     build_s: float) -> dict[str, Any]:
    """Pipeline(threaded=False) over anchor + warm-up + `config.frames` frames: per-stage samples from each
    frame's `stages_ms`, end to end = the time between consecutive frames out of `Pipeline.frames()`."""
    from ..pipeline import Pipeline, PipelineConfig

    skip = 1 + config.warmup
    src = FrameLoop(source.path)
    seg.reset()
    pipe = Pipeline(src, seg, _bench_sinks(workdir / "sequential", source.palette), source.first_mask,
                    palette=source.palette,
                    config=PipelineConfig(max_frames=skip + config.frames, progress="off", threaded=False))
    stages: dict[str, list[float]] = {}
    e2e: list[float] = []
    step: list[float] = []
    setup_s = build_s
    t_start = time.perf_counter()
    try:
        t_prev = clock.now_ns()
        for item in pipe.frames():
            t = clock.now_ns()
            if item.frame_index >= skip:
                e2e.append((t - t_prev) / 1e6)
                step.append(float(item.step_ms))
                for name, ms in item.stages_ms.items():
                    if name == "decode":  # re-opening a looped source is not a per-frame decode cost
                        ms = max(0.0, ms - src.reopen_ms.get(item.frame_index, 0.0))
                    stages.setdefault(name, []).append(float(ms))
            elif item.frame_index == skip - 1:
                setup_s = build_s + time.perf_counter() - t_start
            t_prev = t
        flush_ms = (clock.now_ns() - t_prev) / 1e6  # after the last frame: the sinks closed (encoder flushed)
    finally:
        src.close()
    summary = pipe.summary()
    if len(e2e) != config.frames:
        raise RuntimeError(f"the pipeline produced {summary.frames} frames, expected {skip + config.frames}")
    # a stage that ran on some frames only (none today) cannot line up with the per-frame samples
    stages = {k: v for k, v in stages.items() if len(v) == len(e2e)}
    return {"stages": stages, "e2e": e2e, "step": step, "flush_ms": flush_ms, "setup_s": setup_s,
            "loops": src.loops, "frame_size": tuple(src.size), "frames": summary.frames}


def _threaded_pass(seg: Any, source: _Source, config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """fps of Pipeline(threaded=True), reader thread → model → writer thread with the CLI's sinks, over
    `config.frames` frames (looping the source); the model is already built, so only steady-state work counts.
    Stage percentiles come from the pipeline's own RunStats (recorded once each frame's sinks are done)."""
    from ..pipeline import Pipeline, PipelineConfig

    src = FrameLoop(source.path)
    seg.reset()
    try:
        pipe = Pipeline(src, seg, _bench_sinks(workdir / "threaded", source.palette), source.first_mask,
                        palette=source.palette,
                        config=PipelineConfig(max_frames=config.frames, progress="off", threaded=True))
        for _ in pipe.frames():
            pass
        summary = pipe.summary()
    finally:
        src.close()
    stages = {k: {q: v for q, v in row.items() if q != "n"} for k, row in pipe.stats.stage_percentiles().items()}
    return {"fps": float(summary.fps), "frames": int(summary.frames), "wall_s": float(summary.wall_s),
            "latency_p50_ms": summary.latency_p50_ms, "latency_p95_ms": summary.latency_p95_ms,
            "step_p50_ms": summary.step_p50_ms, "dropped": int(summary.dropped), "stages": stages,
            "note": "Pipeline(threaded=True): reader → model → writer (PNG masks + overlay MP4), as `rtvos segment`"}


def _net_ms(timings: dict[str, float]) -> float:
    return sum(timings.get(k, 0.0) for k in NET_STAGES)


def _step_pass(
    seg: Any, source: _Source, config: BenchConfig, timer: Timer, reference: list[np.ndarray] | None,
    keep_masks: bool,
) -> dict[str, Any]:
    """Anchor, warm up, then time `seg.step` on `config.frames` decoded frames (decode itself untimed)."""
    frames = FrameLoop(source.path)
    seg.reset()
    step_ms, net_ms, ious, masks = [], [], [], []
    kept_bytes = 0
    try:
        seg.step(frames.next()[0], source.first_mask)
        for _ in range(config.warmup):
            seg.step(frames.next()[0])
        for i in range(config.frames):
            image = frames.next()[0]
            res, ms = timer.time(lambda image=image: seg.step(image))  # type: ignore[misc]
            step_ms.append(ms)
            net_ms.append(_net_ms(res.timings_ms))
            if reference is not None and i < len(reference):
                ious.append(mask_iou(reference[i], res.mask))
            if keep_masks and kept_bytes + res.mask.nbytes <= REFERENCE_MASK_BUDGET:
                masks.append(res.mask)
                kept_bytes += res.mask.nbytes
    finally:
        frames.close()
    return {"step_ms": step_ms, "net_ms": net_ms, "ious": ious, "masks": masks}


def _backend_entry(pass_: dict[str, Any], precision: str, setup_s: float, fused: bool,
                   is_reference: bool) -> dict[str, Any]:
    s = summarize(pass_["step_ms"])
    net = summarize(pass_["net_ms"])
    entry: dict[str, Any] = {"status": "ok", "precision": precision, **s,
                             "net_p50_ms": net["p50_ms"], "net_p95_ms": net["p95_ms"],
                             "setup_s": round(setup_s, 3), "fused": fused}
    if is_reference:
        entry.update(iou_vs_eager=1.0, iou_vs_eager_min=1.0, iou_frames=s["n"], reference=True)
    elif pass_["ious"]:
        entry.update(iou_vs_eager=float(np.mean(pass_["ious"])), iou_vs_eager_min=float(np.min(pass_["ious"])),
                     iou_frames=len(pass_["ious"]))
    return entry


def run_benchmark(config: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every pass described in the module docstring; returns a dict matching `result.schema.json`."""
    config.check()
    say = log or (lambda msg: None)
    old_threads, old_cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
            cv2.setNumThreads(config.threads)
        with tempfile.TemporaryDirectory(prefix="rtvos-bench-") as tmp:
            return _run(config, Path(tmp), say)
    finally:
        torch.set_num_threads(old_threads)
        cv2.setNumThreads(old_cv_threads)


class _Backends:
    """Builds segmenters per (backend, precision) for the passes, recording each backend's status once: a backend
    that is unavailable or fails to build is a result in the report, not a crash."""

    def __init__(self, model: Any, config: BenchConfig, source: _Source, say: Callable[[str], None]) -> None:
        from ..backends import backend_status

        self.model, self.config, self.source, self.say = model, config, source, say
        self.status = backend_status()
        self.entries: dict[str, dict[str, Any]] = {}  # key → the report's backends[key]
        self.built: dict[tuple[str, str], tuple[Any, float]] = {}  # (backend, precision) → (segmenter, build s)

    def build(self, name: str, precision: str, key: str | None = None) -> tuple[Any, float] | None:
        key = key or name
        if not self.status.get(name, "unavailable: unknown").startswith("available"):
            reason = self.status.get(name, "unknown backend").removeprefix("unavailable: ")
            self.entries[key] = {"status": "unavailable", "reason": reason, "precision": precision}
            self.say(f"{key}: unavailable ({reason})")
            return None
        self.say(f"{key}: building ({precision})")
        t = time.perf_counter()
        try:
            seg = _make_segmenter(self.model, self.config, name, precision, self.source.first_mask.shape)
        except Exception as e:  # a backend that cannot build here is a result, not a crash
            self.entries[key] = {"status": "failed", "reason": one_line(e, with_type=True), "precision": precision}
            self.say(f"{key}: failed ({self.entries[key]['reason']})")
            return None
        return seg, time.perf_counter() - t

    def primary(self, requested: list[str]) -> tuple[str, str, str | None]:
        """The first requested backend that builds (backend, precision, note); eager fp32 when none does."""
        precision = self.config.precision
        for name in requested:
            got = self.build(name, precision)
            if got is not None:
                self.built[(name, precision)] = got
                return name, precision, None
        note = f"no requested backend could run ({', '.join(requested)}); pipeline on eager fp32"
        got = self.build("eager", "fp32", key="eager-fp32")
        if got is None:
            raise RuntimeError(f"the eager backend failed: {self.entries['eager-fp32']['reason']}")
        self.built[("eager", "fp32")] = got
        return "eager", "fp32", note


def _run(config: BenchConfig, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The passes in order; each is its own function below, this only wires their results into the report."""
    from ..models import load_model_reporting, load_network
    from ..models.rpmnet import RPMNet

    machine = machine_info()
    dev = config.torch_device()
    clock = timer = Timer(dev)  # one clock: synchronised reads for the pipeline, CUDA events for steps
    source = _prepare_source(config, workdir)
    tracked, random_weights = load_model_reporting(config.model)
    # A model without a network (the default: DIS + appearance) runs the pipeline passes; the backend passes
    # (step per backend, cached vs uncached, compute floor) time the default network, what `--model NAME` runs.
    model = tracked if isinstance(tracked, RPMNet) else load_network("default")
    requested = list(dict.fromkeys(resolve_backend(b, dev, config.precision) for b in config.backends))
    backends = _Backends(model, config, source, say)
    primary, primary_precision, primary_note = backends.primary(requested)
    primary_seg, primary_build_s = backends.built[(primary, primary_precision)]
    pipeline_seg = primary_seg if tracked is model else _make_segmenter(tracked, config, "auto", "fp32",
                                                                         source.first_mask.shape)

    say(f"pipeline: {primary} on {source.description}, {config.warmup} warm-up + {config.frames} frames "
        "(Pipeline, threaded=False)")
    seq = _sequential_pass(pipeline_seg, source, config, workdir, clock, primary_build_s)
    stage_samples = {k: seq["stages"][k] for k in stage_order(seq["stages"])}
    stage_summary = {k: summarize(v) for k, v in stage_samples.items()}
    end_to_end = _end_to_end(seq, stage_summary)
    # Throughput through the threaded Pipeline that `rtvos segment` runs (same sinks), so the fps a user gets is
    # measured by the same code path, not inferred from the sequential pass.
    say(f"threaded pipeline: {primary}, {config.frames} frames into PNG masks + an overlay MP4")
    end_to_end["threaded"] = _threaded_pass(pipeline_seg, source, config, workdir)

    step_by_backend, reference = _backend_pass(backends, requested, (primary, primary_precision), seq["setup_s"],
                                               timer)
    say(f"cached vs uncached ({primary}), interleaved")
    cached_vs_uncached, cu_times = _cached_vs_uncached_pass(primary_seg, model, source, config, timer)
    cached_vs_uncached["backend"] = primary
    flow = None
    if config.compare_flow:
        say("flow baseline (OpenCV DIS, medium preset)")
        flow, step_by_backend["flow (DIS)"] = _flow_pass(source, config, reference)
    compute = None
    if config.flops:
        say("compute floor: FLOPs of one cached step, matmul peak")
        compute = _compute_floor(model, source, config)
        end_to_end["floor_ms"] = compute["floor_ms"]
        for entry in backends.entries.values():
            if entry["status"] == "ok":
                entry["floor_ms"] = compute["floor_ms"]
                entry["p50_over_floor"] = entry["p50_ms"] / compute["floor_ms"]

    machine["loadavg_end"] = loadavg()
    settings = _settings(config, source, seq, clock, timer, {
        "model_arch": type(tracked).__name__ + (f" ({tracked.meta.get('source')})" if tracked.meta.get("source") else ""),
        "pipeline_model": pipeline_seg.describe(),
        "backends_network": str(model.meta.get("source", type(model).__name__)),
        "random_weights": bool(random_weights),
        "size": list(primary_seg.size),
        "backend": primary,
        "backend_precision": primary_precision,
        "backend_note": primary_note,
        "backends_resolved": requested,
        "synchronised": bool(primary_seg.sync_timings),
    })
    return {
        "schema": SCHEMA_ID,
        "machine": machine,
        "versions": versions(),
        "settings": settings,
        "end_to_end": end_to_end,
        "stages": stage_summary,
        "cached_vs_uncached": cached_vs_uncached,
        "backends": backends.entries,
        "flow": flow,
        "compute": compute,
        "samples_ms": {
            "end_to_end": seq["e2e"],
            "step": seq["step"],
            "stages": stage_samples,
            "backends": step_by_backend,
            "cached": cu_times[True],
            "uncached": cu_times[False],
        },
    }


def _end_to_end(seq: dict[str, Any], stage_summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The sequential pass's end-to-end figures, with what the per-stage means leave unexplained."""
    e2e = seq["e2e"]
    summary = summarize(e2e)
    unaccounted = summary["mean_ms"] - sum(s["mean_ms"] for s in stage_summary.values())
    return {**summary, "fps": 1e3 * len(e2e) / float(np.sum(e2e)), "unaccounted_mean_ms": unaccounted,
            "encode_flush_ms": seq["flush_ms"]}


def _backend_pass(backends: _Backends, requested: list[str], primary: tuple[str, str], primary_setup_s: float,
                  timer: Timer) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """Every backend's step on the same frames, the eager fp32 reference first (it is the IoU reference, under
    its own key when eager itself is asked at fp16). Fills `backends.entries`; returns the step samples per
    backend and the reference masks."""
    config, source = backends.config, backends.source
    ref_key = "eager" if "eager" not in requested or config.precision == "fp32" else "eager-fp32"
    jobs = [(ref_key, "eager", "fp32", True)] + [
        (name, name, config.precision, False) for name in requested if not (name == "eager" and ref_key == "eager")
    ]
    reference: list[np.ndarray] = []
    step_by_backend: dict[str, list[float]] = {}
    for key, name, precision, is_reference in jobs:
        if key in backends.entries:  # unavailable or failed while looking for the primary
            continue
        got = backends.built.get((name, precision)) or backends.build(name, precision, key)
        if got is None:
            continue
        seg, build_s = got
        backends.say(f"{key}: timing the step on {config.frames} frames")
        t = time.perf_counter()
        try:
            p = _step_pass(seg, source, config, timer, None if is_reference else reference, keep_masks=is_reference)
        except Exception as e:
            if is_reference:
                raise
            backends.entries[key] = {"status": "failed", "reason": one_line(e, with_type=True),
                                     "precision": precision}
            continue
        if is_reference:
            reference = p["masks"]
        if (name, precision) == primary:
            setup_s = primary_setup_s  # built and compiled during the pipeline pass
        else:
            setup_s = build_s + (time.perf_counter() - t) - sum(p["step_ms"]) / 1e3
        entry = _backend_entry(p, precision, setup_s, bool(seg.backend.fused), is_reference)
        if is_reference and len(reference) > 1:
            # How much the reference masks move: near 0 (e.g. random weights, flow ≈ 0) means an IoU of 1.0
            # against it cannot tell a faithful backend from one that just copies the mask.
            moves = [1.0 - mask_iou(a, b) for a, b in zip(reference, reference[1:])]
            entry["reference_motion"] = float(np.mean(moves))
        if name not in requested:
            entry["note"] = "IoU reference only (not requested)"
        backends.entries[key] = entry
        step_by_backend[key] = p["step_ms"]
        if (name, precision) != primary:
            backends.built.pop((name, precision), None)
            del seg
    return step_by_backend, reference


def _cached_vs_uncached_pass(cached: Any, model: Any, source: _Source, config: BenchConfig,
                             timer: Timer) -> tuple[dict[str, Any], dict[bool, list[float]]]:
    """The same compiled unit stepped with and without the embedding cache, interleaved frame by frame."""
    from ..segmenter import Segmenter

    uncached = Segmenter(model, cached.size, config.torch_device(), cache_embeddings=False,
                         mask_resolution=config.mask_resolution,
                         backend="eager")  # an explicit (h, w): the primary's resolved input size
    uncached.backend = cached.backend  # same compiled unit; only the stream's caching differs
    times: dict[bool, list[float]] = {True: [], False: []}
    frames = FrameLoop(source.path)
    try:
        for seg in (cached, uncached):
            seg.reset()
        image = frames.next()[0]
        for seg in (cached, uncached):
            seg.step(image, source.first_mask)
        for i in range(config.warmup + config.frames):
            image = frames.next()[0]
            order = (cached, uncached) if i % 2 == 0 else (uncached, cached)  # no first-mover bias
            for seg in order:
                _, ms = timer.time(lambda seg=seg, image=image: seg.step(image))  # type: ignore[misc]
                if i >= config.warmup:
                    times[seg.cache_embeddings].append(ms)
    finally:
        frames.close()
    c, u = summarize(times[True]), summarize(times[False])
    return {
        "ratio": c["p50_ms"] / u["p50_ms"], "ratio_mean": c["mean_ms"] / u["mean_ms"],
        "cached_p50_ms": c["p50_ms"], "cached_p95_ms": c["p95_ms"],
        "uncached_p50_ms": u["p50_ms"], "uncached_p95_ms": u["p95_ms"], "n": c["n"],
    }, times


def _flow_pass(source: _Source, config: BenchConfig,
               reference: list[np.ndarray]) -> tuple[dict[str, Any], list[float]]:
    """OpenCV DIS flow propagation on the same frames, timed and compared with the eager reference."""
    from ..eval.baselines import FlowBaseline

    base = FlowBaseline()
    frames = FrameLoop(source.path)
    flow_ms, flow_iou = [], []
    try:
        base.step(frames.next()[0], source.first_mask)
        for _ in range(config.warmup):
            base.step(frames.next()[0])
        for i in range(config.frames):
            image = frames.next()[0]
            t = time.perf_counter_ns()
            mask = base.step(image)
            flow_ms.append((time.perf_counter_ns() - t) / 1e6)
            if i < len(reference):
                flow_iou.append(mask_iou(reference[i], mask))
    finally:
        frames.close()
    return {**summarize(flow_ms), "method": "OpenCV DISOpticalFlow (PRESET_MEDIUM) + cv2.remap of the mask",
            "iou_vs_eager": float(np.mean(flow_iou)), "iou_vs_eager_min": float(np.min(flow_iou)),
            "iou_frames": len(flow_iou)}, flow_ms


def _compute_floor(model: Any, source: _Source, config: BenchConfig) -> dict[str, Any]:
    """FLOPs of one cached eager step over the measured matmul peak: a lower bound on the step's time."""
    dev = config.torch_device()
    seg = _make_segmenter(model, config, "eager", "fp32", source.first_mask.shape)
    frames = FrameLoop(source.path)
    try:
        seg.step(frames.next()[0], source.first_mask)
        image = frames.next()[0]
        counted = count_step_flops(lambda: seg.step(image))
    finally:
        frames.close()
    peak_dtype = torch.float16 if config.precision == "fp16" and dev.type == "cuda" else torch.float32
    peak = measure_peak_gflops(dev, peak_dtype)
    floor_ms = counted["flops_per_frame"] / (peak["gflops"] * 1e6)
    return {**counted, "gflops_per_frame": counted["flops_per_frame"] / 1e9, "peak_gflops": peak["gflops"],
            "peak_median_gflops": peak["median_gflops"], "peak_method": peak["method"], "floor_ms": floor_ms,
            "deform_conv_flops": counted["flops_by_op"].get("rtvos.deform_conv2d", 0),
            "note": "FLOPs of matmul/conv/deform-conv ops of one cached eager step; elementwise ops, "
            "resizes and the mask warp count zero, so floor_ms is a lower bound"}


def _settings(config: BenchConfig, source: _Source, seq: dict[str, Any], clock: Timer, timer: Timer,
              resolved: dict[str, Any]) -> dict[str, Any]:
    """What was run, and how it was clocked: the report's `settings` (`resolved` holds what the run decided)."""
    synchronised = resolved.pop("synchronised")
    return {
        "source": source.description,
        "source_path": str(source.path),
        "first_mask": source.mask_description,
        "frame_size": list(seq["frame_size"]),
        "source_loops": seq["loops"],
        "model": config.model,
        "model_arch": resolved["model_arch"],
        "pipeline_model": resolved["pipeline_model"],
        "backends_network": resolved["backends_network"],
        "random_weights": resolved["random_weights"],
        "size": resolved["size"],
        "precision": config.precision,
        "device": str(config.torch_device()),
        "backend": resolved["backend"],
        "backend_precision": resolved["backend_precision"],
        "backend_note": resolved["backend_note"],
        "backends_requested": list(config.backends),
        "backends_resolved": resolved["backends_resolved"],
        "frames": config.frames,
        "warmup": config.warmup,
        "threads": torch.get_num_threads(),
        "threads_requested": config.threads,
        "opencv_threads": cv2.getNumThreads(),
        "mask_resolution": config.mask_resolution,
        "primary_setup_s": round(seq["setup_s"], 3),
        "clock": {
            "stages": "the Pipeline's stages_ms: rtvos.stats.Timer laps (perf_counter_ns) around decode and each "
            f"sink; Segmenter laps{' (synchronised)' if synchronised else ''} inside the step",
            "end_to_end": f"{clock.method} between consecutive frames of Pipeline.frames() (threaded=False)",
            "backend_step": timer.call_method,
        },
        # Thread-pool environment changes latency a lot on a loaded machine (OMP_WAIT_POLICY=PASSIVE stops
        # OpenMP workers spinning on cores other processes need), so it is part of the settings.
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "decode_encode_threads": ("FFmpeg's own (decoder threads only above 720p or on more than 2 cores; "
                                  "libx264 veryfast), not --threads"),
        "data_path": "rtvos.pipeline.Pipeline",
        "sinks": ["png", "encode"],
        "pipeline": ("Pipeline(threaded=False): decode → step → PNG masks → overlay → H.264 encode on one thread, "
                     "so e2e is per-frame latency; end_to_end.threaded is Pipeline(threaded=True)"),
    }
