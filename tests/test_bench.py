"""`rtvos bench`: the JSON has every field for every stage and matches `rtvos/bench/result.schema.json` (checked
with the `jsonschema` package), which rejects malformed documents; the end-to-end passes run through
`rtvos.pipeline.Pipeline`; percentiles are numpy's linear interpolation; the FLOP formula counts the custom deformable conv; bad input
is one line and exit 2; an unavailable backend is a reported reason, not a crash.

One small benchmark run (synthetic 160x120, S=64, r18, 20 frames) is shared by the module; speed itself is
never asserted (that is benchmarks/' job).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

from rtvos import bench
from rtvos.backends import backend_status
from rtvos.common import BUILTIN_BACKENDS
from rtvos.ops.deform_conv import deform_conv2d
from rtvos.stats import Timer

FRAMES = 20
STAGES = {"decode", "preprocess", "embed", "match", "propagate", "appearance", "postprocess", "png", "overlay", "encode"}


def _schema() -> dict[str, Any]:
    """The schema file itself, as shipped in the package (not the library's copy of it)."""
    from importlib import resources

    return json.loads((resources.files("rtvos.bench") / "result.schema.json").read_text())


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _main(argv: list[str]) -> int:
    """Through the real `rtvos` entry point, with bench registered even before apps/cli.py lists it."""
    from rtvos.apps import bench as bench_app
    from rtvos.apps import cli

    with pytest.MonkeyPatch.context() as mp:
        if bench_app not in cli.COMMANDS:
            mp.setattr(cli, "COMMANDS", (*cli.COMMANDS, bench_app))
        try:
            return cli.main(argv)
        except SystemExit as e:  # argparse's usage errors exit 2 like the console script
            return int(e.code or 0)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "synthetic:160x120", "--model", "rpmnet_r18", "--size", "64", "--frames", str(FRAMES),
            "--warmup", "1", "--backend", "eager", "tensorrt", "--compare-flow", "--threads", "2", "--quiet",
            "--json", str(out / "bench.json"), "--plot", str(out / "bench.png")]
    threads_before = torch.get_num_threads()
    rc = _main(argv)
    return {"rc": rc, "json": out / "bench.json", "png": out / "bench.png", "threads_before": threads_before}


@pytest.fixture(scope="module")
def result(run: dict[str, Any]) -> dict[str, Any]:
    assert run["rc"] == 0
    return json.loads(run["json"].read_text())


def test_json_has_every_field_for_every_stage(result: dict[str, Any], validator: Any) -> None:
    validator.validate(result)
    stages = result["stages"]
    assert set(stages) == STAGES  # eager is not fused: embed and match are timed apart; png/encode: the sinks
    for name, st in stages.items():
        assert st["n"] == FRAMES, name
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "min_ms"):
            assert math.isfinite(st[key]) and st[key] >= 0, (name, key)
        assert st["min_ms"] <= st["p50_ms"] <= st["p95_ms"] <= st["p99_ms"] <= st["max_ms"], name
        assert len(result["samples_ms"]["stages"][name]) == FRAMES
    e2e = result["end_to_end"]
    assert e2e["n"] == FRAMES and len(result["samples_ms"]["end_to_end"]) == FRAMES
    # fps is frames over the summed per-frame latency; the stages add up to (at most) the end-to-end time
    assert e2e["fps"] == pytest.approx(1e3 * FRAMES / sum(result["samples_ms"]["end_to_end"]))
    assert sum(s["mean_ms"] for s in stages.values()) <= e2e["mean_ms"] * 1.0001
    assert e2e["p50_ms"] >= stages["embed"]["p50_ms"]
    cu = result["cached_vs_uncached"]
    assert cu["backend"] == "eager" and cu["ratio"] == pytest.approx(cu["cached_p50_ms"] / cu["uncached_p50_ms"])
    assert len(result["samples_ms"]["cached"]) == len(result["samples_ms"]["uncached"]) == FRAMES
    threaded = e2e["threaded"]  # filled from the threaded Pipeline's own RunStats
    assert threaded["frames"] == FRAMES and threaded["fps"] > 0
    assert {"decode", "preprocess", "png", "overlay", "encode"} <= set(threaded["stages"])
    for st in threaded["stages"].values():
        assert 0 <= st["p50_ms"] <= st["p95_ms"] <= st["p99_ms"]


def test_header_and_settings(result: dict[str, Any], run: dict[str, Any]) -> None:
    m, v, s = result["machine"], result["versions"], result["settings"]
    assert m["cpu"] and m["logical_cores"] >= 1 and len(m["loadavg_start"]) == 3 and len(m["loadavg_end"]) == 3
    for key in ("python", "torch", "torchvision", "onnxruntime", "opencv", "av", "rtvos"):
        assert v[key], key
    assert s["threads"] == 2 and s["size"] == [64, 64] and s["frame_size"] == [120, 160]
    assert s["frames"] == FRAMES and s["warmup"] == 1 and s["random_weights"] is True
    assert s["backends_requested"] == ["eager", "tensorrt"] and s["backend"] == "eager"
    assert "perf_counter_ns" in s["clock"]["end_to_end"] and "Pipeline.frames()" in s["clock"]["end_to_end"]
    assert s["data_path"] == "rtvos.pipeline.Pipeline" and s["sinks"] == ["png", "encode"]
    assert torch.get_num_threads() == run["threads_before"]  # --threads is restored after the run


def test_backends_accuracy_beside_speed_and_unavailable_reason(result: dict[str, Any]) -> None:
    eager = result["backends"]["eager"]
    assert eager["status"] == "ok" and eager["iou_vs_eager"] == 1.0 and eager["n"] == FRAMES
    assert eager["p50_ms"] >= eager["net_p50_ms"] > 0  # the network is part of the step
    assert 0 <= eager["reference_motion"] <= 1
    reason = backend_status()["tensorrt"]
    trt = result["backends"]["tensorrt"]
    if reason == "available":  # a machine with TensorRT and a GPU: then it must have run
        assert trt["status"] == "ok"
    else:
        assert trt["status"] == "unavailable"
        assert trt["reason"] == reason.removeprefix("unavailable: ") and trt["reason"]
    flow = result["flow"]
    assert flow["n"] == FRAMES and 0 <= flow["iou_vs_eager_min"] <= flow["iou_vs_eager"] <= 1


def test_compute_floor_counts_the_deformable_convs(result: dict[str, Any]) -> None:
    c = result["compute"]
    assert c["flops_per_frame"] == sum(c["flops_by_op"].values())
    assert c["deform_conv_flops"] > 0 and c["flops_by_op"]["convolution"] > 0
    assert c["floor_ms"] == pytest.approx(c["flops_per_frame"] / (c["peak_gflops"] * 1e6))
    assert result["end_to_end"]["floor_ms"] == c["floor_ms"] == result["backends"]["eager"]["floor_ms"]


def test_plot_is_a_png(run: dict[str, Any], result: dict[str, Any], tmp_path: Path) -> None:
    data = run["png"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    again = bench.plot_result(result, tmp_path / "sub" / "again.png")  # also from a JSON read back
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the schema file rejects malformed documents -----------------------------------------------------------------
def _malformed(result: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for mutate in (
        lambda d: d["stages"]["decode"].pop("p95_ms"),
        lambda d: d["stages"].pop("encode"),
        lambda d: (d["stages"].pop("embed"), d["stages"].pop("match")),  # neither split nor fused
        lambda d: d["stages"]["embed"].__setitem__("p50_ms", "fast"),
        lambda d: d["stages"]["embed"].__setitem__("p99_ms", -1.0),
        lambda d: d["end_to_end"].pop("fps"),
        lambda d: d["end_to_end"].__setitem__("p50_ms", None),
        lambda d: d["backends"]["eager"].pop("iou_vs_eager"),
        lambda d: d["backends"]["eager"].__setitem__("iou_vs_eager", 1.5),
        lambda d: d["backends"]["tensorrt"].__setitem__("reason", ""),
        lambda d: d["backends"].pop("eager"),
        lambda d: d.pop("cached_vs_uncached"),
        lambda d: d["machine"].pop("cpu"),
        lambda d: d["settings"].__setitem__("frames", 2.5),
        lambda d: d["settings"].__setitem__("backends_requested", ["warp-drive"]),
        lambda d: d.__setitem__("schema", "something/else"),
        lambda d: d["stages"]["decode"].__setitem__("n", True),  # a bool is not an integer
        lambda d: d["compute"].__setitem__("flops_per_frame", 0),
    ):
        doc = copy.deepcopy(result)
        mutate(doc)
        docs.append(doc)
    return docs


def test_malformed_json_fails_validation(result: dict[str, Any], validator: Any) -> None:
    assert validator.is_valid(result) and validator.is_valid(json.loads(json.dumps(result)))
    for i, doc in enumerate(_malformed(result)):
        assert not validator.is_valid(doc), i


def test_schema_is_package_data_and_the_library_check_uses_it(result: dict[str, Any]) -> None:
    assert bench.RESULT_SCHEMA == _schema() and bench.result_schema() == _schema()
    assert _schema()["properties"]["schema"] == {"const": bench.SCHEMA_ID}
    assert bench.validate_result(result) is True  # jsonschema is installed here
    for i, doc in enumerate(_malformed(result)):
        with pytest.raises(bench.SchemaError) as err:
            bench.validate_result(doc)
        assert "\n" not in str(err.value), i
    nan = copy.deepcopy(result)
    nan["end_to_end"]["p99_ms"] = float("nan")  # json.dumps would write NaN, which is not JSON
    with pytest.raises(bench.SchemaError, match="not plain JSON"):
        bench.validate_result(nan)


# -- statistics ---------------------------------------------------------------------------------------------
def test_percentiles_on_known_samples() -> None:
    xs = list(range(1, 101))
    assert bench.percentile(xs, 50) == pytest.approx(50.5)
    assert bench.percentile(xs, 95) == pytest.approx(95.05)
    assert bench.percentile(xs, 99) == pytest.approx(99.01)
    assert bench.percentile(xs, 0) == 1 and bench.percentile(xs, 100) == 100
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([3, 1, 2, 4], 50) == 2.5  # unsorted input
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 1000):
        sample = rng.exponential(10, n)
        for q in (0, 1, 33.3, 50, 95, 99, 99.9, 100):
            assert bench.percentile(sample, q) == pytest.approx(np.percentile(sample, q), rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError):
        bench.percentile([], 50)
    with pytest.raises(ValueError):
        bench.percentile([1, 2], 101)
    s = bench.summarize(xs)
    assert (s["n"], s["p50_ms"], s["max_ms"], s["min_ms"], s["mean_ms"]) == (100, 50.5, 100, 1, 50.5)


def test_timer_laps_samples_and_calls() -> None:
    t = Timer(torch.device("cpu"), keep=True)  # the one timer of Segmenter, Pipeline and bench
    assert not t.sync and t.method == "perf_counter_ns" and t.call_method == "perf_counter_ns"
    t.start()
    for _ in range(3):
        t.lap("a")
        t.lap("b")
    t.add("c", 4.0)
    summary = t.summary()
    assert set(summary) == {"a", "b", "c"} and summary["a"]["n"] == 3 and summary["c"]["p50_ms"] == 4.0
    assert t.laps["c"] == 4.0
    out, ms = t.time(lambda: 7)
    assert out == 7 and ms >= 0
    laps: dict[str, float] = {}
    u = Timer("cpu", laps=laps)  # Segmenter's use: the last lap per stage into its timings dict, no lists
    u.start()
    u.lap("x")
    assert set(laps) == {"x"} and u.samples == {}


def test_mask_iou() -> None:
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    assert bench.mask_iou(a, b) == 1.0  # nothing to compare: identical backgrounds
    a[:2, :2] = 1  # 4 px
    b[:2, :1] = 1  # 2 px inside a's
    a[3, 3] = 7
    b[3, 3] = 7
    assert bench.mask_iou(a, b) == pytest.approx((2 / 4 + 1) / 2)
    b[3, 3] = 0  # object 7 missing from b: IoU 0 for it
    assert bench.mask_iou(a, b) == pytest.approx((2 / 4 + 0) / 2)
    with pytest.raises(ValueError):
        bench.mask_iou(a, b[:3])


# -- FLOPs --------------------------------------------------------------------------------------------------
def test_deform_conv_flop_formula_is_registered() -> None:
    n, cin, cout, k, h, w, groups = 2, 8, 6, 3, 10, 12, 2
    x = torch.randn(n, cin, h, w)
    weight = torch.randn(cout, cin // groups, k, k)
    offset = torch.zeros(n, 2 * k * k, h, w)  # one offset group, padding 1 keeps H×W
    mask = torch.rand(n, k * k, h, w)
    counted = bench.count_step_flops(lambda: deform_conv2d(x, offset, weight, padding=1, mask=mask))
    conv = 2 * n * cout * cin * k * k * h * w // groups
    sampling = n * cin * k * k * h * w * (bench.BILINEAR_FLOPS_PER_VALUE + 1)
    points = n * 1 * k * k * h * w * bench.BILINEAR_FLOPS_PER_POINT
    assert counted["flops_by_op"] == {"rtvos.deform_conv2d": conv + sampling + points}
    assert counted["flops_per_frame"] == conv + sampling + points
    # the convolution term equals what FlopCounterMode says for the same plain grouped conv
    plain = bench.count_step_flops(lambda: torch.nn.functional.conv2d(x, weight, padding=1, groups=groups))
    assert plain["flops_per_frame"] == conv


def test_auto_backend_resolves_to_a_concrete_one() -> None:
    from rtvos import backends

    got = bench.resolve_backend("auto", torch.device("cpu"), "fp32")  # the one resolver the bench uses
    assert got in BUILTIN_BACKENDS
    assert got == backends.resolve_backend("auto", torch.device("cpu"), "fp32")
    assert bench.resolve_backend("compile", torch.device("cpu"), "fp32") == "compile"


# -- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "warp-drive"], "invalid choice: 'warp-drive'"),  # argparse: usage, then the error line
        (["--size", "100"], "--size must be a positive multiple of 64, got 100"),
        (["--frames", "0"], "--frames must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--synthetic", "big"], "synthetic size must be WxH"),
        (["synthetic:12x3"], "synthetic size must be WxH"),
        (["/no/such/clip.mp4"], "no such file or folder: /no/such/clip.mp4"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = _main(["bench", *args])
    err = capsys.readouterr().err
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("rtvos bench: error: ") and needle in last and "Traceback" not in err, err
    if not err.startswith("usage:"):  # our own checks: exactly one line
        assert err.count("\n") == 1, err


def test_only_unavailable_backends_fall_back_to_eager(capsys: pytest.CaptureFixture[str]) -> None:
    if backend_status()["tensorrt"] == "available":
        pytest.skip("tensorrt is available here")
    rc = _main(["bench", "--synthetic", "160x120", "--model", "rpmnet_r18", "--size", "64", "--frames", "2",
                "--warmup", "0", "--backend", "tensorrt", "--no-flops", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "tensorrt" in out and "unavailable:" in out and "pipeline on eager fp32" in out


def test_end_to_end_passes_run_through_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both end-to-end passes are `rtvos.pipeline.Pipeline.frames()` runs (sequential, then threaded), not a copy
    of the loop, and the per-stage samples are the pipeline's own `stages_ms`."""
    from rtvos import pipeline

    calls: list[tuple[bool, int | None]] = []
    seen: list[dict[str, float]] = []
    original = pipeline.Pipeline.frames

    def counting(self: Any) -> Any:
        calls.append((self.config.threaded, self.config.max_frames))
        for item in original(self):
            if not self.config.threaded:
                seen.append(dict(item.stages_ms))
            yield item

    monkeypatch.setattr(pipeline.Pipeline, "frames", counting)
    config = bench.BenchConfig(synthetic="160x120", model="rpmnet_r18", size=64, frames=3, warmup=1,
                               backends=("eager",), flops=False, threads=2)
    r = bench.run_benchmark(config)
    assert calls == [(False, 1 + 1 + 3), (True, 3)]
    measured = seen[2:]  # anchor + warm-up are not measured
    assert r["samples_ms"]["stages"]["encode"] == pytest.approx([f["encode"] for f in measured])
    assert r["samples_ms"]["stages"]["png"] == pytest.approx([f["png"] for f in measured])
    assert r["settings"]["data_path"] == "rtvos.pipeline.Pipeline"


def test_defaults_measure_what_segment_runs() -> None:
    import argparse

    from rtvos.apps import bench as bench_app

    config = bench.BenchConfig()
    assert config.backends == ("auto",) and config.device == "auto" and config.size is None
    assert config.torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    parser = argparse.ArgumentParser()
    bench_app.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench"])
    assert args.backend == ["auto"] and args.device == "auto" and args.size is None
