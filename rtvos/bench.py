"""Latency benchmark of the streaming pipeline: what runs in real time, on this machine, and how far from the floor.

One run measures, on the same decoded frames:

* the full pipeline on the first available requested backend, per stage (decode, preprocess, embed, match or
  embed_match, propagate, postprocess, overlay, H.264 encode) and end to end (decode → encode), as
  p50/p95/p99/max and fps — tail latencies, not only means, since a real-time stream drops frames at the tail;
* the cached step (one embedding per frame) against the uncached one (two), interleaved frame by frame so the
  ratio survives a noisy shared machine;
* every requested backend's `Segmenter.step` latency beside its mask IoU against eager fp32, so speed never
  appears without the accuracy it cost; optionally OpenCV DIS flow propagation as the hand-crafted baseline;
* the compute floor: model FLOPs per frame (FlopCounterMode over one cached step, with a formula registered for
  `rtvos::deform_conv2d`, which FlopCounterMode cannot see into) over the machine's measured matmul peak.

The result is a plain dict (JSON-ready), checked against `RESULT_SCHEMA` by `validate` — a small JSON-Schema
subset validator, so the project needs no `jsonschema` dependency.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .backends import AUTO, resolve_backend
from .io import DAVIS_PALETTE, InputError, VideoWriter, open_source, overlay, read_mask

__all__ = [
    "BenchConfig",
    "FrameLoop",
    "RESULT_SCHEMA",
    "SchemaError",
    "StageTimer",
    "count_step_flops",
    "deform_conv2d_flops",
    "format_report",
    "machine_info",
    "mask_iou",
    "measure_peak_gflops",
    "percentile",
    "plot_result",
    "register_deform_conv_flops",
    "run_benchmark",
    "sample_clip_paths",
    "summarize",
    "validate",
    "validate_result",
    "versions",
]

SCHEMA_ID = "rtvos.bench/1"
KNOWN_BACKENDS = ("eager", "compile", "onnx", "tensorrt")
AUTO_BACKEND = AUTO  # resolved to a concrete backend per device by rtvos.backends.resolve_backend
#: Stages in pipeline order; fused backends report embed_match instead of embed + match.
PIPELINE_STAGES = ("decode", "preprocess", "embed", "match", "embed_match", "propagate", "postprocess", "overlay",
                   "encode")
ALWAYS_STAGES = ("decode", "preprocess", "propagate", "postprocess", "overlay", "encode")
NET_STAGES = ("embed", "match", "embed_match")  # the network part of a step, what the compute floor bounds
#: Environment variables that steer thread pools, recorded with every result.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
              "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")
#: Masks of the eager reference are kept for IoU up to this many bytes (frames beyond are not compared).
REFERENCE_MASK_BUDGET = 512 << 20


# ---------------------------------------------------------------------------------------------------------------
# statistics and timers
# ---------------------------------------------------------------------------------------------------------------
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


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
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


class Clock:
    """Host clock in ns. On CUDA it synchronises first, so a reading covers the GPU work queued before it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.method = "torch.cuda.synchronize + perf_counter_ns" if self.cuda else "perf_counter_ns"

    def now_ns(self) -> int:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter_ns()


class StepTimer:
    """Times one call: CUDA events on a GPU (device timeline, synchronised at the end), perf_counter_ns on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.method = "CUDA events" if self.cuda else "perf_counter_ns"

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


class StageTimer:
    """Per-stage latency lists: `start()` then `lap(name)` after each stage, or `add(name, ms)` for outside laps."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.samples: dict[str, list[float]] = {}
        self._t = 0

    def start(self) -> None:
        self._t = self.clock.now_ns()

    def lap(self, name: str) -> float:
        t = self.clock.now_ns()
        ms = (t - self._t) / 1e6
        self._t = t
        self.add(name, ms)
        return ms

    def add(self, name: str, ms: float) -> None:
        self.samples.setdefault(name, []).append(float(ms))

    def summary(self) -> dict[str, dict[str, float | int]]:
        return {name: summarize(v) for name, v in self.samples.items() if v}


# ---------------------------------------------------------------------------------------------------------------
# header: machine and versions
# ---------------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    return None


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:
        return None


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores (logical, physical, usable by this process), RAM, GPUs, OS, and the load average now."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "usable_cores": usable,
        "ram_gb": _ram_gb(),
        "gpu": gpus or None,
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
        "loadavg_end": None,  # filled when the run ends: a load that moved during the run says so
    }


def _dist_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return None


def versions() -> dict[str, str | None]:
    """Versions of everything on the measured path (None = not installed)."""
    import av

    from . import __version__

    return {
        "python": platform.python_version(),
        "rtvos": __version__,
        "torch": torch.__version__,
        "torchvision": _dist_version("torchvision"),
        "onnxruntime": _dist_version("onnxruntime", "onnxruntime-gpu"),
        "opencv": cv2.__version__,
        "av": av.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
    }


# ---------------------------------------------------------------------------------------------------------------
# compute floor: FLOPs per frame and the measured matmul peak
# ---------------------------------------------------------------------------------------------------------------
#: One bilinear sample of one channel: 4 corner products + 3 adds.
BILINEAR_FLOPS_PER_VALUE = 7
#: One sampling point (per offset group): position + offset (2), fractions (2), 1−fraction (2), 4 weights (4).
BILINEAR_FLOPS_PER_POINT = 10


def deform_conv2d_flops(
    input_shape: Sequence[int],
    offset_shape: Sequence[int],
    weight_shape: Sequence[int],
    bias_shape: Sequence[int] | None,
    stride: Any = None,
    padding: Any = None,
    dilation: Any = None,
    mask_shape: Sequence[int] | None = None,
    *args: Any,
    out_shape: Sequence[int],
    **kwargs: Any,
) -> int:
    """FLOPs of one deformable conv as DCN defines it (im2col order), whatever order the kernel picks.

    Convolution: 2·N·Cout·(Cin/groups)·k·k·Hout·Wout. Sampling: every input channel at every tap and output
    position, BILINEAR_FLOPS_PER_VALUE each (+1 for the DCNv2 modulation), plus the bilinear weights once per
    point and offset group. Bias: one add per output value.
    """
    n, cin = int(input_shape[0]), int(input_shape[1])
    cout, cin_per_group, kh, kw = (int(v) for v in weight_shape)
    hout, wout = int(out_shape[2]), int(out_shape[3])
    taps, points = kh * kw, hout * wout
    offset_groups = max(1, int(offset_shape[1]) // (2 * taps))
    conv = 2 * n * cout * cin_per_group * taps * points
    per_value = BILINEAR_FLOPS_PER_VALUE + (1 if mask_shape is not None else 0)
    sampling = n * cin * taps * points * per_value + n * offset_groups * taps * points * BILINEAR_FLOPS_PER_POINT
    bias = n * cout * points if bias_shape is not None else 0
    return conv + sampling + bias


_DEFORM_FLOPS_REGISTERED = False


def register_deform_conv_flops() -> None:
    """Teach FlopCounterMode the custom op (idempotent); without it the deformable convs count as zero."""
    global _DEFORM_FLOPS_REGISTERED
    if _DEFORM_FLOPS_REGISTERED:
        return
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    from .ops import deform_conv  # noqa: F401  (defines torch.ops.rtvos.deform_conv2d)

    target = torch.ops.rtvos.deform_conv2d
    if target not in flop_registry:
        register_flop_formula(target)(deform_conv2d_flops)
    _DEFORM_FLOPS_REGISTERED = True


def count_step_flops(step: Callable[[], Any]) -> dict[str, Any]:
    """FLOPs of one call (e.g. a cached `Segmenter.step`), total and per op.

    FlopCounterMode counts matmul/conv-like ops only (elementwise ops, grid_sample of the mask warp and resizes
    are free to it), so the floor derived from this is a lower bound, as a floor should be.
    """
    from torch.utils.flop_counter import FlopCounterMode

    register_deform_conv_flops()
    with FlopCounterMode(display=False) as counter:
        step()
    by_op = {str(k).removeprefix("aten.").removesuffix(".default"): int(v)
             for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"flops_per_frame": int(counter.get_total_flops()), "flops_by_op": by_op}


def measure_peak_gflops(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = 5
) -> dict[str, Any]:
    """Best-of-`repeats` GFLOP/s of an n×n matmul at the current thread count: the machine's attainable peak."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    timer = StepTimer(device)
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: thread pool, cuBLAS heuristics
        times = [timer.time(lambda: torch.mm(a, b))[1] for _ in range(repeats)]
    flops = 2 * n**3
    best = min(times)
    return {
        "gflops": flops / (best * 1e6),
        "median_gflops": flops / (float(np.median(times)) * 1e6),
        "method": f"{str(dtype).removeprefix('torch.')} matmul {n}x{n}, best of {repeats}, {timer.method}",
        "threads": torch.get_num_threads(),
    }


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


def sample_clip_paths() -> tuple[Path, Path]:
    """The shipped sample clip and its first-frame mask (same files as `rtvos segment` with no argument)."""
    assets = resources.files("rtvos") / "assets"
    return Path(str(assets / "sample.mp4")), Path(str(assets / "sample_mask.png"))


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
    device: str = "cpu"
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

    def check(self) -> None:
        """Every bad value as one InputError line, before anything slow runs."""
        if not self.backends:
            raise InputError("no backend given; expected one or more of " + ", ".join(KNOWN_BACKENDS))
        for b in self.backends:
            if b not in (*KNOWN_BACKENDS, AUTO_BACKEND):
                raise InputError(f"unknown backend {b!r}; expected one or more of "
                                 f"{', '.join((*KNOWN_BACKENDS, AUTO_BACKEND))}")
        if self.precision not in ("fp32", "fp16"):
            raise InputError(f"precision must be fp32 or fp16, got {self.precision!r}")
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
            dev = torch.device(self.device)
        except (RuntimeError, ValueError):
            raise InputError(f"invalid --device {self.device!r} (e.g. cpu, cuda, cuda:0)") from None
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
        from .data.synthetic import make_synthetic_clip, write_synthetic_clip

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


class FrameLoop:
    """Decodes a video/folder for real, looping (re-opened, untimed) when a run needs more frames than it has.

    `next(clock)` returns (RGB frame, decode ms); every pass re-decodes instead of keeping frames in memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loops = 0
        self._src = open_source(path)
        self.fps = self._src.fps
        self.size = self._src.size
        self._it = iter(self._src)

    def next(self, clock: Clock | None = None) -> tuple[np.ndarray, float]:
        t = clock.now_ns() if clock else 0
        try:
            frame = next(self._it)
        except StopIteration:
            self._src.close()
            self._src = open_source(self.path)
            self._it = iter(self._src)
            self.loops += 1
            t = clock.now_ns() if clock else 0  # re-opening is not a per-frame decode cost
            frame = next(self._it)
        return frame.image, ((clock.now_ns() - t) / 1e6 if clock else 0.0)

    def close(self) -> None:
        self._src.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next()[0]


# ---------------------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _make_segmenter(model: Any, config: BenchConfig, backend: str, precision: str, frame_hw: tuple[int, int],
                    cache: bool = True) -> Any:
    from .segmenter import Segmenter

    # ONNX Runtime follows torch's thread count, which --threads has already set.
    seg = Segmenter(model, config.size, torch.device(config.device), cache_embeddings=cache,
                    mask_resolution=config.mask_resolution, backend=backend, precision=precision)
    seg.prepare(frame_hw)  # build (export) the backend for this source's input shape before anything is timed
    return seg


def _threaded_pass(seg: Any, source: _Source, config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """fps of reader thread → model → writer thread with the CLI's sinks, over `config.frames` frames (looping
    the source as the sequential pass does); the model is already built, so only steady-state work counts."""
    from .io import FrameSourceBase, open_source
    from .io.sinks import MaskSink, VideoSink
    from .pipeline import Pipeline, PipelineConfig

    class _Looped(FrameSourceBase):  # the source as the sequential pass sees it: re-opened until enough frames were read
        def __init__(self) -> None:
            self._src = open_source(source.path)
            self.name, self.fps, self.size = "bench", self._src.fps, self._src.size
            self.num_frames = None  # loops until the pipeline's max_frames

        def __iter__(self) -> Any:
            n = 0
            while True:
                for frame in self._src:
                    yield frame
                    n += 1
                if n == 0:
                    return
                self._src.close()
                self._src = open_source(source.path)

        def close(self) -> None:
            self._src.close()

    out = workdir / "threaded"
    shutil.rmtree(out, ignore_errors=True)
    src = _Looped()
    seg.reset()
    try:
        pipe = Pipeline(src, seg, [VideoSink(out / "overlay.mp4"), MaskSink(out, source.palette)],
                        lambda frame: source.first_mask, palette=source.palette,
                        config=PipelineConfig(max_frames=config.frames, progress="off"))
        summary = pipe.run()
    finally:
        src.close()
    return {"fps": float(summary.fps), "frames": int(summary.frames),
            "note": "threaded Pipeline (reader → model → writer: overlay MP4 + PNG masks), as `rtvos segment`"}


def _net_ms(timings: dict[str, float]) -> float:
    return sum(timings.get(k, 0.0) for k in NET_STAGES)


def _step_pass(
    seg: Any, source: _Source, config: BenchConfig, timer: StepTimer, reference: list[np.ndarray] | None,
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
            res, ms = timer.time(lambda image=image: seg.step(image))
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
    """Run every pass described in the module docstring; returns a dict matching `RESULT_SCHEMA`."""
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


def _run(config: BenchConfig, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from . import load_model
    from .backends import backend_status
    from .eval.baselines import FlowBaseline
    from .models import RandomWeightsWarning

    machine = machine_info()
    dev = torch.device(config.device)
    clock, timer = Clock(dev), StepTimer(dev)
    source = _prepare_source(config, workdir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = load_model(config.model)
    random_weights = any(issubclass(w.category, RandomWeightsWarning) for w in caught) or not model.meta.get(
        "trained", False)
    status = backend_status()
    requested = list(dict.fromkeys(resolve_backend(b, dev, config.precision) for b in config.backends))
    backends: dict[str, dict[str, Any]] = {}
    built: dict[tuple[str, str], tuple[Any, float]] = {}  # (backend, precision) → (segmenter, build seconds)

    def build(name: str, precision: str, key: str | None = None) -> tuple[Any, float] | None:
        key = key or name
        if not status.get(name, "unavailable: unknown").startswith("available"):
            reason = status.get(name, "unknown backend").removeprefix("unavailable: ")
            backends[key] = {"status": "unavailable", "reason": reason, "precision": precision}
            say(f"{key}: unavailable ({reason})")
            return None
        say(f"{key}: building ({precision})")
        t = time.perf_counter()
        try:
            seg = _make_segmenter(model, config, name, precision, source.first_mask.shape)
        except Exception as e:  # a backend that cannot build here is a result, not a crash
            backends[key] = {"status": "failed", "reason": _one_line(e), "precision": precision}
            say(f"{key}: failed ({backends[key]['reason']})")
            return None
        return seg, time.perf_counter() - t

    primary, primary_precision, primary_note = "", config.precision, None
    for name in requested:
        got = build(name, config.precision)
        if got is not None:
            built[(name, config.precision)], primary = got, name
            break
    if not primary:  # nothing requested can run: the pipeline still runs, on the reference
        primary, primary_precision = "eager", "fp32"
        primary_note = f"no requested backend could run ({', '.join(requested)}); pipeline on eager fp32"
        got = build("eager", "fp32", key="eager-fp32")
        if got is None:
            raise RuntimeError(f"the eager backend failed: {backends['eager-fp32']['reason']}")
        built[("eager", "fp32")] = got
    primary_seg, primary_build_s = built[(primary, primary_precision)]

    # -- pass 1: the whole pipeline, per stage and end to end -------------------------------------------------
    say(f"pipeline: {primary} on {source.description}, {config.warmup} warm-up + {config.frames} frames")
    stages = StageTimer(clock)
    e2e: list[float] = []
    frames = FrameLoop(source.path)
    writer = VideoWriter(workdir / "bench_overlay.mp4", fps=frames.fps)
    t_setup = time.perf_counter()
    try:
        for i in range(1 + config.warmup + config.frames):
            measured = i > config.warmup
            t0 = clock.now_ns()
            image, decode_ms = frames.next(clock)
            t1 = clock.now_ns()
            res = primary_seg.step(image, source.first_mask if i == 0 else None)
            t2 = clock.now_ns()
            shown = overlay(image, res.mask, source.palette)
            t3 = clock.now_ns()
            writer.write(shown)
            t4 = clock.now_ns()
            if not measured:
                if i == config.warmup:
                    setup_primary = time.perf_counter() - t_setup + primary_build_s
                continue
            stages.add("decode", decode_ms)
            for name, ms in res.timings_ms.items():
                stages.add(name, ms)
            stages.add("overlay", (t3 - t2) / 1e6)
            stages.add("encode", (t4 - t3) / 1e6)
            stages.add("step", (t2 - t1) / 1e6)
            e2e.append((t4 - t0) / 1e6)
        t = clock.now_ns()
        writer.close()
        flush_ms = (clock.now_ns() - t) / 1e6
        loops, frame_size = frames.loops, frames.size
    finally:
        writer.close()
        frames.close()
    step_samples = stages.samples.pop("step")
    summary = stages.summary()
    stage_summary = {k: summary[k] for k in _stage_order(stages.samples)}
    e2e_summary = summarize(e2e)
    unaccounted = e2e_summary["mean_ms"] - sum(s["mean_ms"] for s in stage_summary.values())
    end_to_end = {**e2e_summary, "fps": 1e3 * len(e2e) / float(np.sum(e2e)), "unaccounted_mean_ms": unaccounted,
                  "encode_flush_ms": flush_ms}

    # -- pass 1b: throughput through the threaded Pipeline that `rtvos segment` runs (same sinks: overlay MP4 +
    # PNG masks), so the fps a user gets is measured by the same code path, not inferred from the sequential pass.
    say(f"threaded pipeline: {primary}, {config.frames} frames into an overlay MP4 + PNG masks")
    end_to_end["threaded"] = _threaded_pass(primary_seg, source, config, workdir)

    # -- pass 2: every backend's step on the same frames, the eager fp32 reference first -----------------------
    # Eager fp32 always runs: it is the IoU reference (under its own key when eager itself is asked at fp16).
    ref_key = "eager" if "eager" not in requested or config.precision == "fp32" else "eager-fp32"
    jobs = [(ref_key, "eager", "fp32", True)] + [
        (name, name, config.precision, False) for name in requested if not (name == "eager" and ref_key == "eager")
    ]
    reference: list[np.ndarray] = []
    step_by_backend: dict[str, list[float]] = {}
    for key, name, precision, is_reference in jobs:
        if key in backends:  # unavailable or failed while looking for the primary
            continue
        got = built.get((name, precision)) or build(name, precision, key)
        if got is None:
            continue
        seg, build_s = got
        say(f"{key}: timing the step on {config.frames} frames")
        t = time.perf_counter()
        try:
            p = _step_pass(seg, source, config, timer, None if is_reference else reference, keep_masks=is_reference)
        except Exception as e:
            if is_reference:
                raise
            backends[key] = {"status": "failed", "reason": _one_line(e), "precision": precision}
            continue
        if is_reference:
            reference = p["masks"]
        if (name, precision) == (primary, primary_precision):
            setup_s = setup_primary  # built and compiled during the pipeline pass
        else:
            setup_s = build_s + (time.perf_counter() - t) - sum(p["step_ms"]) / 1e3
        backends[key] = _backend_entry(p, precision, setup_s, bool(seg.backend.fused), is_reference)
        if is_reference and len(reference) > 1:
            # How much the reference masks move: near 0 (e.g. random weights, flow ≈ 0) means an IoU of 1.0
            # against it cannot tell a faithful backend from one that just copies the mask.
            moves = [1.0 - mask_iou(a, b) for a, b in zip(reference, reference[1:])]
            backends[key]["reference_motion"] = float(np.mean(moves))
        if name not in requested:
            backends[key]["note"] = "IoU reference only (not requested)"
        step_by_backend[key] = p["step_ms"]
        if (name, precision) != (primary, primary_precision):
            built.pop((name, precision), None)
            del seg

    # -- pass 3: cached vs uncached step, interleaved -------------------------------------------------------
    say(f"cached vs uncached ({primary}), interleaved")
    from .segmenter import Segmenter

    cached = primary_seg
    uncached = Segmenter(model, cached.size, dev, cache_embeddings=False, mask_resolution=config.mask_resolution,
                         backend="eager")  # an explicit (h, w): the primary's resolved input size
    uncached.backend = cached.backend  # same compiled unit; only the stream's caching differs
    cu_times: dict[bool, list[float]] = {True: [], False: []}
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
                _, ms = timer.time(lambda seg=seg, image=image: seg.step(image))
                if i >= config.warmup:
                    cu_times[seg.cache_embeddings].append(ms)
    finally:
        frames.close()
    c, u = summarize(cu_times[True]), summarize(cu_times[False])
    cached_vs_uncached = {
        "ratio": c["p50_ms"] / u["p50_ms"], "ratio_mean": c["mean_ms"] / u["mean_ms"], "backend": primary,
        "cached_p50_ms": c["p50_ms"], "cached_p95_ms": c["p95_ms"],
        "uncached_p50_ms": u["p50_ms"], "uncached_p95_ms": u["p95_ms"], "n": c["n"],
    }
    del uncached

    # -- pass 4 (optional): OpenCV DIS flow propagation on the same frames -----------------------------------
    flow = None
    if config.compare_flow:
        say("flow baseline (OpenCV DIS, medium preset)")
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
        flow = {**summarize(flow_ms), "method": "OpenCV DISOpticalFlow (PRESET_MEDIUM) + cv2.remap of the mask",
                "iou_vs_eager": float(np.mean(flow_iou)), "iou_vs_eager_min": float(np.min(flow_iou)),
                "iou_frames": len(flow_iou)}
        step_by_backend["flow (DIS)"] = flow_ms

    # -- compute floor -----------------------------------------------------------------------------------------
    compute: dict[str, Any] | None = None
    if config.flops:
        say("compute floor: FLOPs of one cached step, matmul peak")
        seg = _make_segmenter(model, config, "eager", "fp32", source.first_mask.shape)
        frames = FrameLoop(source.path)
        try:
            seg.step(frames.next()[0], source.first_mask)
            image = frames.next()[0]
            counted = count_step_flops(lambda: seg.step(image))
        finally:
            frames.close()
        del seg
        peak_dtype = torch.float16 if config.precision == "fp16" and dev.type == "cuda" else torch.float32
        peak = measure_peak_gflops(dev, peak_dtype)
        floor_ms = counted["flops_per_frame"] / (peak["gflops"] * 1e6)
        compute = {**counted, "gflops_per_frame": counted["flops_per_frame"] / 1e9, "peak_gflops": peak["gflops"],
                   "peak_median_gflops": peak["median_gflops"], "peak_method": peak["method"], "floor_ms": floor_ms,
                   "deform_conv_flops": counted["flops_by_op"].get("rtvos.deform_conv2d", 0),
                   "note": "FLOPs of matmul/conv/deform-conv ops of one cached eager step; elementwise ops, "
                   "resizes and the mask warp count zero, so floor_ms is a lower bound"}
        end_to_end["floor_ms"] = floor_ms
        for entry in backends.values():
            if entry["status"] == "ok":
                entry["floor_ms"] = floor_ms
                entry["p50_over_floor"] = entry["p50_ms"] / floor_ms

    machine["loadavg_end"] = loadavg()
    size = primary_seg.size
    settings = {
        "source": source.description,
        "source_path": str(source.path),
        "first_mask": source.mask_description,
        "frame_size": list(frame_size),
        "source_loops": loops,
        "model": config.model,
        "model_arch": type(model).__name__ + (f" ({model.meta.get('source')})" if model.meta.get("source") else ""),
        "random_weights": bool(random_weights),
        "size": list(size),
        "precision": config.precision,
        "device": str(dev),
        "backend": primary,
        "backend_precision": primary_precision,
        "backend_note": primary_note,
        "backends_requested": list(config.backends),
        "backends_resolved": requested,
        "frames": config.frames,
        "warmup": config.warmup,
        "threads": torch.get_num_threads(),
        "threads_requested": config.threads,
        "opencv_threads": cv2.getNumThreads(),
        "mask_resolution": config.mask_resolution,
        "primary_setup_s": round(setup_primary, 3),
        "clock": {
            "stages": f"{clock.method} around decode/overlay/encode; Segmenter laps (time.perf_counter"
            f"{', synchronised' if clock.cuda else ''}) inside the step",
            "end_to_end": clock.method,
            "backend_step": timer.method,
        },
        # Thread-pool environment changes latency a lot on a loaded machine (OMP_WAIT_POLICY=PASSIVE stops
        # OpenMP workers spinning on cores other processes need), so it is part of the settings.
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "decode_encode_threads": ("FFmpeg's own (decoder threads only above 720p or on more than 2 cores; "
                                  "libx264 veryfast), not --threads"),
        "pipeline": "sequential on one thread (decode → step → overlay → encode), so e2e is per-frame latency",
    }
    return {
        "schema": SCHEMA_ID,
        "machine": machine,
        "versions": versions(),
        "settings": settings,
        "end_to_end": end_to_end,
        "stages": stage_summary,
        "cached_vs_uncached": cached_vs_uncached,
        "backends": backends,
        "flow": flow,
        "compute": compute,
        "samples_ms": {
            "end_to_end": e2e,
            "step": step_samples,
            "stages": {k: stages.samples[k] for k in stage_summary},
            "backends": step_by_backend,
            "cached": cu_times[True],
            "uncached": cu_times[False],
        },
    }


def _stage_order(names: Any) -> list[str]:
    known = [s for s in PIPELINE_STAGES if s in names]
    return known + sorted(n for n in names if n not in PIPELINE_STAGES)


# ---------------------------------------------------------------------------------------------------------------
# schema and validator
# ---------------------------------------------------------------------------------------------------------------
_MS = {"type": "number", "minimum": 0}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_LATENCY_KEYS = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "min_ms", "max_ms")
LATENCY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["n", *_LATENCY_KEYS],
    "properties": {"n": {"type": "integer", "minimum": 1}, **{k: _MS for k in _LATENCY_KEYS}},
}
_BACKEND_OK = {
    "type": "object",
    "required": ["status", "precision", "n", *_LATENCY_KEYS, "net_p50_ms", "net_p95_ms", "iou_vs_eager",
                 "iou_vs_eager_min", "iou_frames", "setup_s"],
    "properties": {
        **LATENCY_SCHEMA["properties"],
        "status": {"enum": ["ok"]},
        "precision": {"enum": ["fp32", "fp16"]},
        "net_p50_ms": _MS, "net_p95_ms": _MS,
        "iou_vs_eager": _FRACTION, "iou_vs_eager_min": _FRACTION,
        "iou_frames": {"type": "integer", "minimum": 1},
        "setup_s": {"type": "number"},
        "floor_ms": _MS, "p50_over_floor": _MS,
        "fused": {"type": "boolean"},
        "reference_motion": _FRACTION,
    },
}
_BACKEND_NOT_RUN = {
    "type": "object",
    "required": ["status", "reason"],
    "properties": {"status": {"enum": ["unavailable", "failed"]}, "reason": {"type": "string", "minLength": 1}},
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "machine", "versions", "settings", "end_to_end", "stages", "cached_vs_uncached",
                 "backends", "compute", "flow"],
    "properties": {
        "schema": {"enum": [SCHEMA_ID]},
        "machine": {
            "type": "object",
            "required": ["cpu", "logical_cores", "ram_gb", "gpu", "platform", "loadavg_start", "loadavg_end"],
            "properties": {
                "cpu": {"type": "string"},
                "logical_cores": {"type": ["integer", "null"]},
                "ram_gb": {"type": ["number", "null"]},
                "gpu": {"type": ["array", "null"]},
                "loadavg_start": {"type": ["array", "null"], "items": {"type": "number"}},
                "loadavg_end": {"type": ["array", "null"], "items": {"type": "number"}},
            },
        },
        "versions": {
            "type": "object",
            "required": ["python", "rtvos", "torch", "torchvision", "onnxruntime", "opencv", "av", "numpy"],
            "additionalProperties": {"type": ["string", "null"]},
        },
        "settings": {
            "type": "object",
            "required": ["source", "model", "size", "precision", "device", "backend", "backends_requested", "frames",
                         "warmup", "threads", "clock"],
            "properties": {
                "frames": {"type": "integer", "minimum": 1},
                "warmup": {"type": "integer", "minimum": 0},
                "threads": {"type": "integer", "minimum": 1},
                "size": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "backends_requested": {"type": "array", "items": {"enum": [*KNOWN_BACKENDS, AUTO_BACKEND]}},
                "clock": {"type": "object", "required": ["stages", "end_to_end", "backend_step"]},
            },
        },
        "end_to_end": {
            "type": "object",
            "required": ["fps", *LATENCY_SCHEMA["required"]],
            "properties": {**LATENCY_SCHEMA["properties"], "fps": {"type": "number", "minimum": 0},
                           "floor_ms": _MS,
                           "threaded": {"type": "object", "required": ["fps", "frames"],
                                        "properties": {"fps": {"type": "number", "minimum": 0},
                                                       "frames": {"type": "integer", "minimum": 1},
                                                       "note": {"type": "string"}}}},
        },
        "stages": {
            "type": "object",
            "required": list(ALWAYS_STAGES),
            "additionalProperties": LATENCY_SCHEMA,
            "anyOf": [{"required": ["embed", "match"]}, {"required": ["embed_match"]}],
        },
        "cached_vs_uncached": {
            "type": "object",
            "required": ["ratio", "backend", "cached_p50_ms", "uncached_p50_ms", "cached_p95_ms", "uncached_p95_ms"],
            "properties": {"ratio": {"type": "number", "minimum": 0}, "cached_p50_ms": _MS, "uncached_p50_ms": _MS,
                           "cached_p95_ms": _MS, "uncached_p95_ms": _MS, "backend": {"type": "string"}},
        },
        "backends": {
            "type": "object",
            "required": ["eager"],
            "additionalProperties": {"anyOf": [_BACKEND_OK, _BACKEND_NOT_RUN]},
        },
        "flow": {
            "anyOf": [
                {"type": "null"},
                {"type": "object", "required": ["p50_ms", "p95_ms", "p99_ms", "iou_vs_eager", "iou_vs_eager_min"],
                 "properties": {**LATENCY_SCHEMA["properties"], "iou_vs_eager": _FRACTION,
                                "iou_vs_eager_min": _FRACTION}},
            ]
        },
        "compute": {
            "anyOf": [
                {"type": "null"},
                {"type": "object",
                 "required": ["flops_per_frame", "peak_gflops", "floor_ms", "peak_method", "deform_conv_flops"],
                 "properties": {"flops_per_frame": {"type": "integer", "minimum": 1},
                                "deform_conv_flops": {"type": "integer", "minimum": 0},
                                "peak_gflops": {"type": "number", "exclusiveMinimum": 0}, "floor_ms": _MS}},
            ]
        },
    },
}


class SchemaError(ValueError):
    """A document does not match a schema; the message is one line naming the first failing path."""


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # JSON has no NaN or infinity: a number that is neither is what every consumer can read.
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
}


def validate(doc: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors ("path: message") of `doc` against a JSON-Schema subset: type, enum, required, properties,
    additionalProperties, items, minimum/maximum/exclusiveMinimum, minLength, anyOf. Empty list = valid."""
    errors: list[str] = []
    if "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        unknown = [t for t in types if t not in _TYPES]
        if unknown:
            raise ValueError(f"schema at {path} uses unsupported type(s) {unknown}")
        if not any(_TYPES[t](doc) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(doc).__name__} {_short(doc)}"]
    if "enum" in schema and not any(doc == v and type(doc) is type(v) for v in schema["enum"]):
        errors.append(f"{path}: {_short(doc)} is not one of {schema['enum']}")
    if _TYPES["number"](doc):
        if "minimum" in schema and doc < schema["minimum"]:
            errors.append(f"{path}: {doc} < minimum {schema['minimum']}")
        if "exclusiveMinimum" in schema and doc <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {doc} <= exclusive minimum {schema['exclusiveMinimum']}")
        if "maximum" in schema and doc > schema["maximum"]:
            errors.append(f"{path}: {doc} > maximum {schema['maximum']}")
    if isinstance(doc, str) and len(doc) < schema.get("minLength", 0):
        errors.append(f"{path}: string shorter than {schema['minLength']}")
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            if key not in doc:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in doc.items():
            sub = f"{path}.{key}"
            if key in props:
                errors += validate(value, props[key], sub)
            elif extra is False:
                errors.append(f"{sub}: unexpected key")
            elif isinstance(extra, dict):
                errors += validate(value, extra, sub)
    if isinstance(doc, list) and "items" in schema:
        for i, value in enumerate(doc):
            errors += validate(value, schema["items"], f"{path}[{i}]")
    if "anyOf" in schema:
        branches = [validate(doc, s, path) for s in schema["anyOf"]]
        if all(branches):
            best = min(branches, key=len)
            errors.append(f"{path}: matches none of {len(branches)} alternatives (closest: {best[0]})")
    return errors


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_result(doc: Any, schema: dict[str, Any] | None = None) -> None:
    """Raise SchemaError (one line) unless `doc` matches RESULT_SCHEMA."""
    errors = validate(doc, RESULT_SCHEMA if schema is None else schema)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaError(f"bench result does not match {SCHEMA_ID}: {errors[0]}{more}")


# ---------------------------------------------------------------------------------------------------------------
# report: terminal table and plot
# ---------------------------------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def format_report(r: dict[str, Any]) -> str:
    """The header, the per-stage table (with share of end to end), cached vs uncached, and the backend table."""
    m, s, v = r["machine"], r["settings"], r["versions"]
    gpu = ", ".join(g["name"] for g in m["gpu"]) if m["gpu"] else "no GPU"
    la = lambda x: " ".join(f"{a:.2f}" for a in x) if x else "?"  # noqa: E731
    size = "x".join(str(x) for x in s["size"]) if s["size"][0] != s["size"][1] else str(s["size"][0])
    lines = [
        f"machine  {m['cpu']}, {m['logical_cores']} logical cores ({m.get('usable_cores')} usable), "
        f"{m['ram_gb']} GB RAM, {gpu}; load avg {la(m['loadavg_start'])} (start) -> {la(m['loadavg_end'])} (end)",
        "versions " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"settings {s['source']} {s['frame_size'][1]}x{s['frame_size'][0]}, model {s['model']}"
        f"{' (RANDOM weights)' if s.get('random_weights') else ''}, S={size}, backend {s['backend']} "
        f"{s['backend_precision']}, device {s['device']}, threads {s['threads']} (opencv {s['opencv_threads']}), "
        f"{s['warmup']} warm-up + {s['frames']} frames, clock {s['clock']['end_to_end']}"
        + (", env " + " ".join(f"{k}={val}" for k, val in s["env"].items()) if s.get("env") else ""),
    ]
    if s.get("backend_note"):
        lines.append(f"note     {s['backend_note']}")
    e = r["end_to_end"]
    lines += ["", f"{'stage':<14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'share':>8}"]
    for name, st in r["stages"].items():
        share = st["mean_ms"] / e["mean_ms"] if e["mean_ms"] else 0.0
        lines.append(f"{name:<14}{st['p50_ms']:>9.2f}{st['p95_ms']:>9.2f}{st['p99_ms']:>9.2f}{st['max_ms']:>9.2f}"
                     f"{share:>8.1%}")
    lines.append(f"{'(other)':<14}{'':>36}{e['unaccounted_mean_ms'] / e['mean_ms']:>8.1%}")
    lines.append(f"{'end to end':<14}{e['p50_ms']:>9.2f}{e['p95_ms']:>9.2f}{e['p99_ms']:>9.2f}{e['max_ms']:>9.2f}"
                 f"{'100%':>8}   {e['fps']:.1f} fps (sequential: one frame at a time, the latency view)")
    if "threaded" in e:
        t = e["threaded"]
        lines.append(f"{'threaded':<14}{'':>36}{'':>8}   {t['fps']:.1f} fps ({t['frames']} frames through the "
                     "reader → model → writer pipeline of `rtvos segment`, MP4 + PNG sinks)")
    c = r["compute"]
    if c:
        lines.append(f"compute floor {c['gflops_per_frame']:.2f} GFLOP/frame (deform conv "
                     f"{c['deform_conv_flops'] / 1e9:.2f}) / {c['peak_gflops']:.1f} GFLOP/s peak "
                     f"({c['peak_method']}) = {c['floor_ms']:.2f} ms")
    cu = r["cached_vs_uncached"]
    lines += ["", f"cached vs uncached step ({cu['backend']}, interleaved): p50 {cu['cached_p50_ms']:.1f} / "
              f"{cu['uncached_p50_ms']:.1f} ms (p95 {cu['cached_p95_ms']:.1f} / {cu['uncached_p95_ms']:.1f}) "
              f"-> ratio {cu['ratio']:.2f}"]
    lines += ["", f"{'backend':<12}{'prec':<6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'net p50':>9}{'floor':>8}"
              f"{'IoU mean':>10}{'IoU min':>9}{'setup s':>9}"]
    for name, b in r["backends"].items():
        if b["status"] != "ok":
            lines.append(f"{name:<12}{b.get('precision', '-'):<6}  {b['status']}: {b['reason']}")
            continue
        lines.append(f"{name:<12}{b['precision']:<6}{b['p50_ms']:>9.2f}{b['p95_ms']:>9.2f}{b['p99_ms']:>9.2f}"
                     f"{b['net_p50_ms']:>9.2f}{_f(b.get('floor_ms'), '.2f'):>8}{b['iou_vs_eager']:>10.4f}"
                     f"{b['iou_vs_eager_min']:>9.4f}{b['setup_s']:>9.1f}")
    fl = r.get("flow")
    if fl:
        lines.append(f"{'flow (DIS)':<12}{'-':<6}{fl['p50_ms']:>9.2f}{fl['p95_ms']:>9.2f}{fl['p99_ms']:>9.2f}"
                     f"{'-':>9}{'-':>8}{fl['iou_vs_eager']:>10.4f}{fl['iou_vs_eager_min']:>9.4f}{'-':>9}")
    lines.append("(step = Segmenter.step, preprocess → postprocess; net = embed + match inside it; IoU vs eager "
                 "fp32 on the same frames)")
    motion = next((b["reference_motion"] for b in r["backends"].values() if "reference_motion" in b), None)
    if motion is not None:
        lines.append(f"eager masks change by {motion:.1%} per frame (mean 1 - IoU of consecutive masks)"
                     + ("; IoU vs eager cannot tell a faithful backend from a copy here" if motion < 0.01 else ""))
    return "\n".join(lines)


def plot_result(r: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Histogram of end-to-end and per-backend step latency, and per-frame latency with the stages stacked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend state
    from matplotlib.figure import Figure

    samples = r["samples_ms"]
    fig = Figure(figsize=(13, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_hist, ax_frames = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    series = {"end to end": samples["end_to_end"], **{f"step {k}": v for k, v in samples["backends"].items()}}
    hi = max(max(v) for v in series.values() if v)
    lo = min(min(v) for v in series.values() if v)
    bins = np.geomspace(max(lo, 1e-3), hi * 1.01, 50) if hi > 0 else 50
    for name, values in series.items():
        ax_hist.hist(values, bins=bins, histtype="step", linewidth=1.5,
                     label=f"{name} (p50 {percentile(values, 50):.1f}, p99 {percentile(values, 99):.1f})")
    ax_hist.set_xscale("log")
    ax_hist.set_xlabel("latency [ms] (log)")
    ax_hist.set_ylabel("frames")
    ax_hist.set_title("latency histogram")
    ax_hist.legend(fontsize=7)
    names = list(samples["stages"])
    x = np.arange(len(samples["end_to_end"]))
    ax_frames.stackplot(x, *[samples["stages"][n] for n in names], labels=names, alpha=0.8)
    ax_frames.plot(x, samples["end_to_end"], color="k", linewidth=1, label="end to end")
    e = r["end_to_end"]
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        ax_frames.axhline(e[q], color="k", linestyle=":", linewidth=0.8)
        ax_frames.annotate(q.removesuffix("_ms"), (x[-1] if len(x) else 0, e[q]), fontsize=7, va="bottom")
    if r.get("compute"):
        ax_frames.axhline(r["compute"]["floor_ms"], color="r", linestyle="--", linewidth=1, label="compute floor")
    ax_frames.set_xlabel("measured frame")
    ax_frames.set_ylabel("latency [ms]")
    s = r["settings"]
    ax_frames.set_title(f"per frame: {s['backend']} {s['backend_precision']}, S={s['size'][0]}, "
                        f"{s['threads']} threads, {e['fps']:.1f} fps")
    ax_frames.legend(fontsize=7, loc="upper left", ncol=2)
    load = r["machine"].get("loadavg_start")
    fig.suptitle(f"rtvos bench: {s['source']} on {r['machine']['cpu']}"
                 + (f", load avg {load[0]:.1f} at start" if load else ""), fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


