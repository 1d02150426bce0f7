"""Latency benchmark of the streaming pipeline: what runs in real time, on this machine, and how far from the floor.

One run measures, on the same decoded frames:

* the full pipeline through `rtvos.pipeline.Pipeline` (the class `rtvos segment` runs, same sinks), per stage
  (decode, preprocess, embed, match or embed_match, propagate, postprocess, PNG masks, overlay, H.264 encode)
  and end to end, as p50/p95/p99/max and fps, sequentially (the latency view) and threaded (the fps a user gets);
* the cached step (one embedding per frame) against the uncached one (two), interleaved frame by frame so the
  ratio survives a noisy shared machine;
* every requested backend's `Segmenter.step` latency beside its mask IoU against eager fp32, so speed never
  appears without the accuracy it cost; optionally OpenCV DIS flow propagation as the hand-crafted baseline;
* the compute floor: model FLOPs per frame (FlopCounterMode over one cached step, with a formula registered for
  `rtvos::deform_conv2d`, which FlopCounterMode cannot see into) over the machine's measured matmul peak.

The result is a plain dict (JSON-ready) described by `result.schema.json` (JSON Schema 2020-12).

Modules: `runner` (BenchConfig, run_benchmark and the passes), `machine` (the header), `flops` (the compute
floor), `report` (table and plot), `schema` (the schema file and `validate_result`); statistics and the timer
are the library-wide `rtvos.stats`.
"""

from __future__ import annotations

from ..backends import resolve_backend
from ..data.sample import sample_clip_paths
from ..stats import Timer, percentile, summarize
from .flops import (
    BILINEAR_FLOPS_PER_POINT,
    BILINEAR_FLOPS_PER_VALUE,
    count_step_flops,
    deform_conv2d_flops,
    measure_peak_gflops,
    register_deform_conv_flops,
)
from .machine import loadavg, machine_info, versions
from .report import format_report, plot_result
from .runner import (
    NET_STAGES,
    BenchConfig,
    FrameLoop,
    mask_iou,
    run_benchmark,
)
from .schema import RESULT_SCHEMA, SCHEMA_ID, SchemaError, result_schema, validate_result

__all__ = [
    "BILINEAR_FLOPS_PER_POINT",
    "BILINEAR_FLOPS_PER_VALUE",
    "BenchConfig",
    "FrameLoop",
    "NET_STAGES",
    "RESULT_SCHEMA",
    "SCHEMA_ID",
    "SchemaError",
    "Timer",
    "count_step_flops",
    "deform_conv2d_flops",
    "format_report",
    "loadavg",
    "machine_info",
    "mask_iou",
    "measure_peak_gflops",
    "percentile",
    "plot_result",
    "register_deform_conv_flops",
    "resolve_backend",
    "result_schema",
    "run_benchmark",
    "sample_clip_paths",
    "summarize",
    "validate_result",
    "versions",
]

