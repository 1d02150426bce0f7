"""`rtvos bench`: the JSON has every field for every stage and matches the schema; the validator can fail;
percentiles are numpy's linear interpolation; the FLOP formula counts the custom deformable conv; bad input
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

import numpy as np
import pytest
import torch

from rtvos import bench
from rtvos.backends import backend_status
from rtvos.ops.deform_conv import deform_conv2d

FRAMES = 20


def _main(argv: list[str]) -> int:
    """Through the real `rtvos` entry point, with bench registered even before apps/cli.py lists it."""
    from apps import bench as bench_app
    from apps import cli

    with pytest.MonkeyPatch.context() as mp:
        if bench_app not in cli.COMMANDS:
            mp.setattr(cli, "COMMANDS", (*cli.COMMANDS, bench_app))
        return cli.main(argv)


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


def test_json_has_every_field_for_every_stage(result: dict[str, Any]) -> None:
    bench.validate_result(result)
    stages = result["stages"]
    expected = {"decode", "preprocess", "embed", "match", "propagate", "postprocess", "overlay", "encode"}
    assert set(stages) == expected  # eager is not fused: embed and match are timed apart
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


def test_header_and_settings(result: dict[str, Any], run: dict[str, Any]) -> None:
    m, v, s = result["machine"], result["versions"], result["settings"]
    assert m["cpu"] and m["logical_cores"] >= 1 and len(m["loadavg_start"]) == 3 and len(m["loadavg_end"]) == 3
    for key in ("python", "torch", "torchvision", "onnxruntime", "opencv", "av", "rtvos"):
        assert v[key], key
    assert s["threads"] == 2 and s["size"] == [64, 64] and s["frame_size"] == [120, 160]
    assert s["frames"] == FRAMES and s["warmup"] == 1 and s["random_weights"] is True
    assert s["backends_requested"] == ["eager", "tensorrt"] and s["backend"] == "eager"
    assert "perf_counter_ns" in s["clock"]["end_to_end"]
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


# -- the validator can fail ---------------------------------------------------------------------------------
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


def test_malformed_json_fails_validation(result: dict[str, Any]) -> None:
    bench.validate_result(result)
    for i, doc in enumerate(_malformed(result)):
        with pytest.raises(bench.SchemaError) as err:
            bench.validate_result(doc)
        assert "\n" not in str(err.value), i
    nan = copy.deepcopy(result)
    nan["end_to_end"]["p99_ms"] = float("nan")  # json.dumps would write NaN, which is not JSON
    assert bench.validate(nan, bench.RESULT_SCHEMA)
    assert not bench.validate(json.loads(json.dumps(result)), bench.RESULT_SCHEMA)


def test_validator_agrees_with_jsonschema(result: dict[str, Any]) -> None:
    """Cross-check the hand-written validator where the reference implementation happens to be installed."""
    jsonschema = pytest.importorskip("jsonschema")
    cls = jsonschema.validators.validator_for(bench.RESULT_SCHEMA, default=jsonschema.Draft202012Validator)
    cls.check_schema(bench.RESULT_SCHEMA)
    ref = cls(bench.RESULT_SCHEMA)
    assert ref.is_valid(result)
    for doc in _malformed(result):
        assert not ref.is_valid(doc) and bench.validate(doc, bench.RESULT_SCHEMA)


def test_validator_rules() -> None:
    schema = {"type": "object", "required": ["a"], "additionalProperties": False,
              "properties": {"a": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                             "b": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 2}]}}}
    assert bench.validate({"a": [0, 3], "b": None}, schema) == []
    assert bench.validate({"a": [0, 3], "b": "ok"}, schema) == []
    assert bench.validate({"a": [0, -3]}, schema) == ["$.a[1]: -3 < minimum 0"]
    assert bench.validate({"a": [1.5]}, schema)[0].startswith("$.a[0]: expected integer")
    assert bench.validate({"a": [], "c": 1}, schema) == ["$.c: unexpected key"]
    assert bench.validate({"b": "x"}, schema)[0] == "$: missing required key 'a'"
    assert "matches none" in bench.validate({"a": [], "b": "x"}, schema)[0]
    with pytest.raises(ValueError, match="unsupported type"):
        bench.validate(1, {"type": "complex"})


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


def test_stage_timer_laps() -> None:
    t = bench.StageTimer(bench.Clock(torch.device("cpu")))
    t.start()
    for _ in range(3):
        t.lap("a")
        t.lap("b")
    t.add("c", 4.0)
    summary = t.summary()
    assert set(summary) == {"a", "b", "c"} and summary["a"]["n"] == 3 and summary["c"]["p50_ms"] == 4.0


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
    assert got in bench.KNOWN_BACKENDS
    assert got == backends.resolve_backend("auto", torch.device("cpu"), "fp32")
    assert bench.resolve_backend("compile", torch.device("cpu"), "fp32") == "compile"


# -- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "warp-drive"], "unknown backend 'warp-drive'"),
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
    assert err.count("\n") == 1 and err.startswith("rtvos bench: error: ") and needle in err, err


def test_only_unavailable_backends_fall_back_to_eager(capsys: pytest.CaptureFixture[str]) -> None:
    if backend_status()["tensorrt"] == "available":
        pytest.skip("tensorrt is available here")
    rc = _main(["bench", "--synthetic", "160x120", "--model", "rpmnet_r18", "--size", "64", "--frames", "2",
                "--warmup", "0", "--backend", "tensorrt", "--no-flops", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "tensorrt" in out and "unavailable:" in out and "pipeline on eager fp32" in out
