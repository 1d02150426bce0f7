"""Backends must reproduce the eager reference through the Segmenter.

The test model has random (non-zero) deformable offsets and a flow layer scaled up so that masks really move
(a few % of pixels change over the clip): with the default init the flow is ~0 and any backend would "pass".
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import rtvos
from rtvos.backends import backend_status, create_backend, list_backends
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.segmenter import Segmenter

S = 64
NUM_FRAMES = 6
FLOW_TOL = 1e-4  # S/4 pixels; the backends compute the same fp32 math in another order


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU over the ids present in either mask (background included)."""
    ids = np.union1d(np.unique(a), np.unique(b))
    ious = []
    for i in ids:
        inter = np.logical_and(a == i, b == i).sum()
        union = np.logical_or(a == i, b == i).sum()
        ious.append(inter / union)
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def model() -> rtvos.models.rpmnet.RPMNet:
    torch.manual_seed(0)
    m = rtvos.create_model("rpmnet_r18").eval()
    with torch.no_grad():
        for mod in m.modules():
            if hasattr(mod, "offset_conv"):
                mod.offset_conv.weight.normal_(0, 0.05)  # non-zero offsets exercise the deformable sampling
        m.matching.flow_layer.weight.normal_(0, 0.1)
    return m


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return make_synthetic_clip(NUM_FRAMES, S, S, num_objects=2, seed=0)


def _run(  # type: ignore[no-untyped-def]
    model: torch.nn.Module, clip, backend: str, **kw: object
) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    seg = Segmenter(model, S, backend=backend, **kw)
    masks, flows = [], []
    for i, (frame, mask) in enumerate(zip(clip.frames, clip.masks)):
        r = seg.step(frame, mask if i == 0 else None)
        masks.append(r.mask)
        if r.flow is not None:
            flows.append(r.flow.detach().cpu().float())
    return masks, flows


@pytest.fixture(scope="module")
def eager_run(model, clip):  # type: ignore[no-untyped-def]
    masks, flows = _run(model, clip, "eager")
    moved = float((masks[-1] != masks[0]).mean())
    peak = max(float(f.abs().max()) for f in flows)
    # The parity test is only meaningful if the reference actually moves the mask.
    assert moved > 0.01 and peak > 0.5, f"test model too static: {moved=:.4f} {peak=:.3f}"
    return masks, flows


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.getbasetemp() / "rtvos-cache"  # shared within the session: exports are reused
    monkeypatch.setenv("RTVOS_CACHE", str(root))
    return root


def _check_parity(name: str, eager_run, other) -> None:  # type: ignore[no-untyped-def]
    (em, ef), (om, of) = eager_run, other
    ious = [_iou(a, b) for a, b in zip(em, om)]
    flow_diff = max(float((a - b).abs().max()) for a, b in zip(ef, of))
    print(f"\n[{name}] per-frame IoU vs eager: {[round(x, 5) for x in ious]}  flow max |diff|: {flow_diff:.3e}")
    assert len(om) == len(em) and len(of) == len(ef)
    assert min(ious) >= 0.99, ious
    assert flow_diff <= FLOW_TOL, flow_diff


# -- registry -------------------------------------------------------------------------------------------------
def test_backends_registered() -> None:
    assert {"eager", "compile", "onnx", "tensorrt"} <= set(list_backends())
    status = backend_status()
    assert status["eager"] == "available"
    # ONNX Runtime is a core dependency: its backend must be usable wherever rtvos installs.
    assert status["onnx"] == "available", status["onnx"]
    # TensorRT's status follows from what is importable here, and an unavailable one names what is missing.
    import importlib.util

    trt_ok = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    if trt_ok:
        assert status["tensorrt"] == "available", status["tensorrt"]
    else:
        assert status["tensorrt"].startswith("unavailable: ") and (
            "tensorrt" in status["tensorrt"] or "GPU" in status["tensorrt"]), status["tensorrt"]
    assert set(status) == set(list_backends())  # every registered backend reports, none is invented


def test_unavailable_backend_raises_with_reason(  # type: ignore[no-untyped-def]
    model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtvos import backends

    monkeypatch.setitem(backends._PROBES, "onnx", lambda: "onnxruntime missing (simulated)")
    with pytest.raises(RuntimeError, match="onnx.*onnxruntime missing \\(simulated\\)"):
        create_backend("onnx", model, (S, S), torch.device("cpu"))


def test_tensorrt_unavailable_reason_is_named(model) -> None:  # type: ignore[no-untyped-def]
    reason = backend_status()["tensorrt"]
    if reason == "available":
        pytest.skip("tensorrt backend is available here; the unavailable path is not reachable")
    with pytest.raises(RuntimeError, match="tensorrt.*not available here: .+"):
        create_backend("tensorrt", model, (S, S), torch.device("cpu"))


def test_fp16_on_cpu_rejected(model) -> None:  # type: ignore[no-untyped-def]
    for name in ("compile", "onnx"):
        if backend_status()[name] != "available":
            continue
        with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
            create_backend(name, model, (S, S), torch.device("cpu"), precision="fp16")


# -- compile --------------------------------------------------------------------------------------------------
compile_reason = backend_status()["compile"]


@pytest.mark.skipif(compile_reason != "available", reason=f"compile backend {compile_reason}")
def test_compile_parity(model, clip, eager_run) -> None:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    other = _run(model, clip, "compile")
    print(f"\n[compile] clip incl. compilation: {time.perf_counter() - t:.1f}s")
    _check_parity("compile", eager_run, other)


@pytest.mark.skipif(compile_reason != "available", reason=f"compile backend {compile_reason}")
def test_compile_keeps_custom_op_one_node(model) -> None:  # type: ignore[no-untyped-def]
    """What torch.compile sees (the Dynamo graph) holds rtvos::deform_conv2d as one call per layer."""
    from rtvos.backends.compiled import StepModule

    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> torch.fx.GraphModule:
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    x, prev = torch.rand(1, 3, S, S), torch.rand(1, 32, S // 4, S // 4)
    with torch.no_grad():
        torch.compile(StepModule(model), backend=capture, fullgraph=True, dynamic=False)(x, prev)
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert sum("rtvos.deform_conv2d" in t for t in targets) == 3, targets


# -- onnx -----------------------------------------------------------------------------------------------------
onnx_reason = backend_status()["onnx"]
needs_onnx = pytest.mark.skipif(onnx_reason != "available", reason=f"onnx backend {onnx_reason}")


@needs_onnx
@pytest.mark.parametrize("deform", ["deformconv", "gridsample"])
def test_onnx_graph_is_valid_and_lowered_as_designed(  # type: ignore[no-untyped-def]
    model, cache: Path, deform: str
) -> None:
    import onnx

    from rtvos.backends.onnx import export_onnx

    for kind in ("step", "embed"):
        path = export_onnx(model, (S, S), kind, deform)
        assert path.parent == cache / "onnx"
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        ops = [n.op_type for n in proto.graph.node]
        if kind == "embed":
            assert "DeformConv" not in ops and "GridSample" not in ops  # E has no deformable layer
            continue
        assert [i.name for i in proto.graph.input] == ["x", "prev_emb"]
        assert [o.name for o in proto.graph.output] == ["emb", "flow"]
        if deform == "deformconv":
            assert ops.count("DeformConv") == 3 and "GridSample" not in ops
        else:
            assert "DeformConv" not in ops and ops.count("GridSample") == 3 and "MatMul" in ops


@needs_onnx
def test_onnx_cache_is_keyed_by_weights(model, cache: Path) -> None:  # type: ignore[no-untyped-def]
    import copy

    from rtvos.backends.onnx import export_onnx, model_hash

    p1 = export_onnx(model, (S, S), "embed", "deformconv")
    mtime = p1.stat().st_mtime_ns
    assert export_onnx(model, (S, S), "embed", "deformconv") == p1 and p1.stat().st_mtime_ns == mtime  # reused
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.embedding.parameters().__next__().add_(1e-3)
    assert model_hash(other) != model_hash(model)


@needs_onnx
@pytest.mark.parametrize("deform", ["deformconv", "gridsample"])
def test_onnx_parity(model, clip, eager_run, cache: Path, deform: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from rtvos import backends

    # the registry factory forwards extra kwargs to OnnxBackend, so the lowering can be forced per test;
    # monkeypatch takes the extra registry entry out again
    seg_backend = f"onnx-{deform}"
    onnx_factory = backends._BACKENDS["onnx"]
    monkeypatch.setitem(backends._BACKENDS, seg_backend, lambda *a, **k: onnx_factory(*a, deform=deform, **k))
    monkeypatch.setitem(backends._PROBES, seg_backend, backends._PROBES["onnx"])
    other = _run(model, clip, seg_backend)
    _check_parity(f"onnx/{deform}", eager_run, other)


@needs_onnx
def test_onnx_fp16_graph_valid_and_close(model, cache: Path) -> None:  # type: ignore[no-untyped-def]
    """The fp16 graph (meant for the CUDA EP) keeps fp32 I/O and fp32 deformable sampling; the CPU EP can run it
    too, which checks its numbers here against eager fp32 within fp16 rounding."""
    import onnx
    import onnxruntime as ort

    from rtvos.backends.onnx import export_onnx

    path = export_onnx(model, (S, S), "step", "deformconv", "fp16")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inits = {i.data_type for i in proto.graph.initializer if len(i.dims) == 4}
    assert onnx.TensorProto.FLOAT16 in inits  # conv weights really are half
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.FLOAT] * 2
    torch.manual_seed(1)
    x, prev = torch.rand(1, 3, S, S), torch.rand(1, 32, S // 4, S // 4)
    with torch.no_grad():
        emb = model.embed(x)
        flow = model.match(prev, emb)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    e16, f16 = sess.run(None, {"x": x.numpy(), "prev_emb": prev.numpy()})
    emb_err = float(np.abs(e16 - emb.numpy()).max() / np.abs(emb.numpy()).max())
    flow_err = float(np.abs(f16 - flow.numpy()).max())
    flow_mag = float(flow.abs().max())
    print(f"\n[onnx fp16 on CPU EP] emb rel err {emb_err:.2e}, flow max |diff| {flow_err:.2e} (|flow| ≤ {flow_mag:.2f})")
    assert emb_err < 5e-3 and flow_err < 1e-2 * max(1.0, flow_mag)  # fp16 rounding, far below a pixel


@needs_onnx
def test_onnx_auto_uses_deformconv_when_ort_has_it(model, cache: Path) -> None:  # type: ignore[no-untyped-def]
    from rtvos.backends.onnx import OnnxBackend, ort_supports_deformconv

    b = OnnxBackend(model, (S, S), torch.device("cpu"))
    expected = "deformconv" if ort_supports_deformconv(("CPUExecutionProvider",)) else "gridsample"
    assert b.deform == expected
    with pytest.raises(ValueError, match="exported for input"):
        b.embed(torch.rand(1, 3, 2 * S, 2 * S))


# -- tensorrt -------------------------------------------------------------------------------------------------
def _trt_reason() -> str:
    return backend_status()["tensorrt"]


@pytest.mark.skipif(
    _trt_reason() != "available", reason=f"tensorrt backend {_trt_reason()} (needs an NVIDIA GPU + TensorRT)"
)
def test_tensorrt_parity(model, clip, eager_run) -> None:  # type: ignore[no-untyped-def]
    _check_parity("tensorrt", eager_run, _run(model, clip, "tensorrt"))


_TRT_NET = importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_rtx")


@pytest.mark.skipif(_TRT_NET is None, reason="neither tensorrt nor tensorrt_rtx is installed")
def test_tensorrt_parses_exported_onnx_on_cpu(model, cache: Path) -> None:  # type: ignore[no-untyped-def]
    """Building a TensorRT network definition needs no GPU: the decomposed (GridSample) step graph must parse,
    which is the plugin-free engine route of rtvos.backends.tensorrt_engines."""
    from rtvos.backends.onnx import export_onnx
    from rtvos.backends.tensorrt_engines import parse_onnx_network
    from rtvos.backends.tensorrt_plugin import import_tensorrt

    trt = import_tensorrt()
    path = export_onnx(model, (S, S), "step", "gridsample")
    parsed = parse_onnx_network(trt, path)
    assert parsed.network.num_inputs == 2 and parsed.network.num_outputs == 2
    print(f"\n[tensorrt {trt.__name__} {trt.__version__}] {len(parsed.layer_types)} layers")
    assert parsed.layer_types.count("GRID_SAMPLE") == 3, sorted(set(parsed.layer_types))


def test_engine_cache_is_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Engines go to `engines/` under the one rtvos cache root ($RTVOS_CACHE_DIR first), next to the ONNX
    exports, never into the installed package; $RTVOS_ENGINE_DIR still overrides the engine folder alone."""
    from rtvos.backends.onnx import cache_dir as onnx_cache_dir
    from rtvos.backends.tensorrt_engines import engine_dir, engine_path
    from rtvos.cache import cache_root

    monkeypatch.delenv("RTVOS_ENGINE_DIR", raising=False)
    monkeypatch.setenv("RTVOS_CACHE_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("RTVOS_CACHE", str(tmp_path / "older-name"))  # the older variable loses to the new one
    assert engine_dir() == tmp_path / "root" / "engines" and onnx_cache_dir() == tmp_path / "root" / "onnx"
    path = engine_path("k" * 20, "step", (64, 64), "fp16")
    assert path == tmp_path / "root" / "engines" / f"step-64x64-fp16-{'k' * 20}.engine"
    package = Path(rtvos.__file__).resolve().parents[1]
    assert package not in path.resolve().parents

    monkeypatch.delenv("RTVOS_CACHE_DIR")
    assert engine_dir() == tmp_path / "older-name" / "engines"
    monkeypatch.delenv("RTVOS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "rtvos" and engine_dir() == tmp_path / "xdg" / "rtvos" / "engines"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert engine_dir() == tmp_path / "home" / ".cache" / "rtvos" / "engines"
    monkeypatch.setenv("RTVOS_ENGINE_DIR", str(tmp_path / "mine"))
    assert engine_dir() == tmp_path / "mine"


def test_tensorrt_modules_import_one_way() -> None:
    """No import cycle between rtvos and the TensorRT entry points: nothing under rtvos/ imports `rtvos.engines` or
    `rtvos.plugins` (not even inside a function), while those only re-export the library's modules."""
    import ast

    import rtvos.engines.build
    import rtvos.plugins.deform_conv_plugin
    from rtvos.backends import tensorrt_engines, tensorrt_plugin

    root = Path(rtvos.__file__).resolve().parent
    offenders = []
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{py.relative_to(root)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("engines", "plugins") or n.startswith(("rtvos.engines", "rtvos.plugins"))]
    assert not offenders, offenders
    for facade, home in ((rtvos.engines.build, tensorrt_engines), (rtvos.plugins.deform_conv_plugin, tensorrt_plugin)):
        assert facade.__all__ and all(getattr(facade, n) is getattr(home, n) for n in facade.__all__), facade


# -- optional Triton kernel -----------------------------------------------------------------------------------
_TRITON_SCRIPT = """
import torch
from rtvos.backends.triton_kernel import deform_conv2d_triton
from rtvos.ops.deform_conv import deform_conv2d_torch
torch.manual_seed(0)
worst = 0.0
for c, o, h, w, g, wg, s, p, d, use_mask in [(4, 6, 7, 9, 2, 2, 1, 1, 1, True), (3, 2, 8, 6, 1, 1, 2, 2, 2, False)]:
    x, wt, b = torch.rand(1, c, h, w), torch.randn(o, c // wg, 3, 3), torch.randn(o)
    oh, ow = (h + 2 * p - 2 * d - 1) // s + 1, (w + 2 * p - 2 * d - 1) // s + 1
    off = torch.randn(1, 2 * g * 9, oh, ow) * 3  # many taps land outside the image
    m = torch.rand(1, g * 9, oh, ow) if use_mask else None
    ref = deform_conv2d_torch(x, off, wt, b, [s, s], [p, p], [d, d], m)
    out = deform_conv2d_triton(x, off, wt, b, [s, s], [p, p], [d, d], m, block=16)
    worst = max(worst, float((out - ref).abs().max()))
print(worst)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernel_matches_torch_in_interpreter() -> None:
    """No GPU here: Triton's CPU interpreter runs the same kernel source (not its GPU codegen)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    worst = float(res.stdout.strip().splitlines()[-1])
    print(f"\n[triton interpreter] max |diff| vs PyTorch kernel: {worst:.2e}")
    assert worst < 1e-4


def test_auto_backend_picks_onnx_on_cpu_and_falls_back_to_eager(monkeypatch):
    import warnings

    import rtvos.backends as backends

    model = rtvos.create_model("rpmnet_r18").eval()
    cpu = torch.device("cpu")
    expected = "onnx" if backends.backend_status()["onnx"] == "available" else "eager"
    assert backends.resolve_backend("auto", cpu) == expected
    assert backends.resolve_backend("auto", cpu, "fp16") == "eager"  # no fp16 CPU path is faster than eager
    assert backends.resolve_backend("compile", cpu) == "compile"  # explicit names pass through

    def broken(*args, **kwargs):
        raise RuntimeError("export exploded")

    monkeypatch.setitem(backends._BACKENDS, "onnx", broken)
    monkeypatch.setitem(backends._PROBES, "onnx", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = backends.create_backend("auto", model, (64, 64), cpu)
    assert b.name == "eager"
    assert any("export exploded" in str(w.message) for w in caught)
    with pytest.raises(RuntimeError, match="export exploded"):  # an explicit request is not silently replaced
        backends.create_backend("onnx", model, (64, 64), cpu)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        backends.create_backend("nope", model, (64, 64), cpu)


@pytest.mark.skipif(backend_status()["onnx"] != "available", reason="onnxruntime not installed")
def test_onnx_runtime_threads_follow_torch():
    """--threads sets torch's count; ONNX Runtime must use the same, or one process runs on two budgets."""
    model = rtvos.create_model("rpmnet_r18").eval()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # more than this machine's cores, so ONNX Runtime's own default cannot match
        b = create_backend("onnx", model, (64, 64), torch.device("cpu"))
        assert all(s.get_session_options().intra_op_num_threads == 3 for s in b.sessions.values())
    finally:
        torch.set_num_threads(old)


def test_corrupt_onnx_cache_entry_is_rebuilt_with_one_warning(model, cache: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue #13.5: a truncated export in the cache is detected on load, rebuilt, and the backend works."""
    import warnings

    from rtvos.backends.onnx import OnnxBackend

    first = OnnxBackend(model, (64, 64), torch.device("cpu"), cache=cache)
    path = first.paths["step"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated, as a full disk or a kill would leave it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = OnnxBackend(model, (64, 64), torch.device("cpu"), cache=cache)
    msgs = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(msgs) == 1 and str(path) in msgs[0]
    assert path.read_bytes() == data  # rebuilt in place, identical
    x, e = torch.rand(1, 3, 64, 64), torch.rand(1, 32, 16, 16)
    torch.testing.assert_close(again.step(x, e)[1], first.step(x, e)[1])
