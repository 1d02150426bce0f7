"""`onnx` backend: the step (x, prev_emb) → (emb, flow) and an embed-only graph, exported with static shapes
and run by onnxruntime.

How `rtvos::deform_conv2d` is lowered (``deform=``):

* ``"deformconv"``: the standard ONNX ``DeformConv`` (opset 19), one node per layer, via a custom translation
  for the dynamo exporter. onnxruntime's CPU EP implements it (checked: it matches torchvision to ~5e-7).
* ``"gridsample"``: the op is decomposed into its own pure-PyTorch kernel before translation, giving
  ``GridSample`` + ``MatMul`` — for runtimes/EPs without ``DeformConv``.
* ``"auto"``: ``deformconv`` when onnxruntime can run a one-node DeformConv model on the chosen providers.

Exports are cached in ``onnx/`` under the user cache root (:mod:`rtvos.cache`: ``$RTVOS_CACHE_DIR``, else
``~/.cache/rtvos``), keyed by a hash of the weights, the input size, the graph kind, the lowering, the opset,
the precision and the torch version, because exporting takes seconds and the weights rarely change.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cache import user_cache_dir
from ..common import check_precision
from ..models.rpmnet import STRIDE, RPMNet
from . import Backend
from .compiled import EmbedModule, MatchModule, StepModule

__all__ = [
    "OPSET",
    "DEFORM_MODES",
    "OnnxBackend",
    "cache_dir",
    "model_hash",
    "export_onnx",
    "probe",
    "ort_supports_deformconv",
]

OPSET = 19  # DeformConv appears in opset 19
DEFORM_MODES = ("auto", "deformconv", "gridsample")
EMB_CHANNELS = 32
_EXPORT_VERSION = "1"  # bump when the export recipe changes, so stale cache entries are not reused
# ORT ≤ 1.31 rejects models with the IR version onnx ≥ 1.18 writes by default; 10 covers opset ≤ 22.
_IR_VERSION = 10


def probe() -> str | None:
    """Usable when onnx, onnxruntime and onnxscript (the dynamo exporter's backend) import."""
    missing = []
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(mod)
        except Exception as e:
            missing.append(f"{mod} ({type(e).__name__}: {e})")
    if missing:
        return "cannot import " + ", ".join(missing) + "; pip install onnx onnxruntime onnxscript"
    return None


def cache_dir() -> Path:
    """Where exports are cached: ``onnx/`` under the rtvos user cache (see :mod:`rtvos.cache`)."""
    return user_cache_dir("onnx")


def model_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): same weights ⇒ same cache key."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    config = getattr(model, "config", None)
    h.update(repr(config).encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------------------
# lowering of rtvos::deform_conv2d
# -------------------------------------------------------------------------------------------------------------
def _deformconv_translation() -> Any:
    """Translation rtvos::deform_conv2d → ONNX DeformConv; built lazily since onnxscript is optional."""
    from onnxscript import opset19 as op

    def deform_conv2d(
        input: Any,
        offset: Any,
        weight: Any,
        bias: Any = None,
        stride: Sequence[int] = (1, 1),
        padding: Sequence[int] = (0, 0),
        dilation: Sequence[int] = (1, 1),
        mask: Any = None,
    ) -> Any:
        kh, kw = int(weight.shape[2]), int(weight.shape[3])
        group = int(input.shape[1]) // int(weight.shape[1])
        offset_group = int(offset.shape[1]) // (2 * kh * kw)
        # Same layout as torchvision: offsets (dy, dx) per tap, taps row-major, mask one value per tap.
        return op.DeformConv(
            input,
            weight,
            offset,
            bias,
            mask,
            dilations=[int(d) for d in dilation],
            group=group,
            kernel_shape=[kh, kw],
            offset_group=offset_group,
            pads=[int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])],
            strides=[int(s) for s in stride],
        )

    return deform_conv2d


def _decompose_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    mask: Tensor | None,
) -> Tensor:
    from ..ops.deform_conv import deform_conv2d_torch

    return deform_conv2d_torch(input, offset, weight, bias, stride, padding, dilation, mask)


@functools.lru_cache(maxsize=None)
def ort_supports_deformconv(providers: tuple[str, ...]) -> bool:
    """Whether onnxruntime runs a one-node DeformConv model on these providers (older ORT lacks the kernel)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def vi(name: str, shape: list[int]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    node = helper.make_node("DeformConv", ["X", "W", "O"], ["Y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph(
        [node], "probe", [vi("X", [1, 2, 4, 4]), vi("W", [1, 2, 3, 3]), vi("O", [1, 18, 4, 4])], [vi("Y", [1, 1, 4, 4])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=_IR_VERSION)
    try:
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(model.SerializeToString(), providers=list(providers))
        feeds = {"X": np.ones((1, 2, 4, 4), "f"), "W": np.ones((1, 2, 3, 3), "f"), "O": np.zeros((1, 18, 4, 4), "f")}
        y = sess.run(None, feeds)[0]
    except Exception:
        return False
    return bool(abs(float(y[0, 0, 1, 1]) - 18.0) < 1e-4)  # interior pixel, zero offsets: 2 ch × 9 taps


def _resolve_deform(deform: str, providers: Sequence[str]) -> str:
    if deform not in DEFORM_MODES:
        raise ValueError(f"deform must be one of {DEFORM_MODES}, got {deform!r}")
    if deform == "auto":
        return "deformconv" if ort_supports_deformconv(tuple(providers)) else "gridsample"
    return deform


# -------------------------------------------------------------------------------------------------------------
# export
# -------------------------------------------------------------------------------------------------------------
def _example_inputs(kind: str, size: tuple[int, int], prior: bool = False, batch: int = 1) -> tuple[Tensor, ...]:
    h, w = size
    x = torch.rand(batch, 3, h, w)
    emb = torch.rand(batch, EMB_CHANNELS, h // STRIDE, w // STRIDE)
    extra = (torch.randn(batch, 2, h // STRIDE, w // STRIDE),) if prior else ()
    if kind == "embed":
        return (x,)
    if kind == "match":
        return (emb, emb.clone(), *extra)
    return (x, emb, *extra)


_IO_NAMES = {  # kind -> (inputs, outputs); a prior model's graphs take the prior field as their last input
    "step": (["x", "prev_emb"], ["emb", "flow"]),
    "embed": (["x"], ["emb"]),
    "match": (["prev_emb", "emb"], ["flow"]),
}


def _to_fp16(model_proto: Any) -> Any:
    """fp16 weights/activations with fp32 I/O; the deformable sampling stays fp32 (like the eager op under
    autocast), since a half-precision grid cannot address pixels exactly."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    del model_proto.graph.value_info[:]  # the exporter's fp32 annotations would contradict the converted types
    half = convert_float_to_float16(
        model_proto, keep_io_types=True, op_block_list=["DeformConv", "GridSample"], disable_shape_infer=False
    )
    wrapped = OnnxModel(half)
    wrapped.topological_sort()  # the converter appends the I/O casts at the end of the node list
    return wrapped.model


def export_onnx(
    model: RPMNet,
    size: tuple[int, int],
    kind: str = "step",
    deform: str = "deformconv",
    precision: str = "fp32",
    cache: Path | None = None,
    batch: int = 1,
) -> Path:
    """Export (or reuse from cache) the `kind` graph ("step" or "embed") and return the .onnx path. Graphs have a
    fixed batch (``batch`` frames; `rtvos.batching` runs several streams' frames as one forward); exports are
    keyed by shape and batch.

    The file is validated with `onnx.checker` before it is moved into the cache, so a cached file is valid.
    """
    import onnx

    if kind not in _IO_NAMES:
        raise ValueError(f"kind must be one of {list(_IO_NAMES)}, got {kind!r}")
    if deform not in ("deformconv", "gridsample"):
        raise ValueError(f"deform must be 'deformconv' or 'gridsample' here (resolve 'auto' first), got {deform!r}")
    check_precision(precision)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    size = (int(size[0]), int(size[1]))
    shape = f"{size[0]}x{size[1]}" + (f"b{batch}" if batch > 1 else "")  # batch 1 keeps its old cache names
    key = hashlib.sha256(
        "|".join(
            [model_hash(model), kind, shape, deform, precision, str(OPSET), torch.__version__, _EXPORT_VERSION]
        ).encode()
    ).hexdigest()[:20]
    out_dir = cache or cache_dir()
    path = out_dir / f"{kind}-{shape}-{deform}-{precision}-{key}.onnx"
    if path.is_file():
        return path

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cpu_model = model if device.type == "cpu" else _cpu_copy(model)
    modules = {"step": StepModule, "embed": EmbedModule, "match": MatchModule}
    module: nn.Module = modules[kind](cpu_model)
    args = _example_inputs(kind, size, model.uses_prior, batch)
    in_names, out_names = _IO_NAMES[kind]
    in_names = in_names + (["prior"] if model.uses_prior and kind != "embed" else [])
    try:
        with torch.no_grad():
            ep = torch.export.export(module, args, strict=False)
            table: dict[Any, Any] = {}
            if deform == "gridsample":
                ep = ep.run_decompositions({torch.ops.rtvos.deform_conv2d.default: _decompose_deform_conv2d})
            else:
                table = {torch.ops.rtvos.deform_conv2d.default: _deformconv_translation()}
            with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
                program = torch.onnx.export(
                    ep,
                    args,
                    dynamo=True,
                    opset_version=OPSET,
                    custom_translation_table=table,
                    input_names=in_names,
                    output_names=out_names,
                    optimize=True,
                    verbose=False,
                )
    finally:
        model.train(was_training)
    assert program is not None  # dynamo=True always returns an ONNXProgram
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, _IR_VERSION)
    if precision == "fp16":
        proto = _to_fp16(proto)
    onnx.checker.check_model(proto, full_check=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".onnx.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(proto.SerializeToString())
    os.replace(tmp, path)  # atomic: concurrent exporters never see a half-written file
    return path


def _cpu_copy(model: RPMNet) -> RPMNet:
    import copy

    return copy.deepcopy(model).cpu()


# -------------------------------------------------------------------------------------------------------------
# backend
# -------------------------------------------------------------------------------------------------------------
class OnnxBackend(Backend):
    name = "onnx"
    fused = True

    def __init__(
        self,
        model: RPMNet,
        size: tuple[int, int],
        device: torch.device,
        precision: str = "fp32",
        deform: str = "auto",
        cache: Path | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        super().__init__(model, size, device, precision)
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise RuntimeError(
                    f"backend 'onnx' on {device} needs onnxruntime's CUDAExecutionProvider "
                    f"(pip install onnxruntime-gpu); this onnxruntime has {available}"
                )
            self.providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": device.index or 0}),
                "CPUExecutionProvider",
            ]
            provider_names: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
        elif device.type == "cpu":
            if precision == "fp16":
                raise ValueError("precision fp16 needs a CUDA device for the onnx backend (CPU EP fp16 is slow)")
            self.providers = ["CPUExecutionProvider"]
            provider_names = ("CPUExecutionProvider",)
        else:
            raise RuntimeError(f"backend 'onnx' does not support device type {device.type!r}")
        self.deform = _resolve_deform(deform, provider_names)
        # A prior model runs embed and match apart, so the Segmenter can compute DIS beside the embedding.
        self.fused = not model.uses_prior
        kinds = ("step", "embed") if self.fused else ("embed", "match")
        self.paths = {kind: export_onnx(model, size, kind, self.deform, precision, cache) for kind in kinds}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Follow torch's thread count (what --threads / torch.set_num_threads chose), so every backend of one
        # process uses the same number of cores; an explicit count overrides it.
        opts.intra_op_num_threads = intra_op_threads if intra_op_threads is not None else torch.get_num_threads()
        # Spinning worker threads steal the cores the decoder, encoder and other processes need; on a shared
        # 2-core machine they made steps several times slower. Sleep between ops instead.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._opts, self._cache = opts, cache  # what a batch-N session of this backend is built with
        self._batch_sessions: dict[int, Any] = {}  # batch size → embed session (a graph has a fixed batch)
        self._batch_lock = threading.Lock()
        self.sessions = {}
        for kind, p in self.paths.items():
            try:
                self.sessions[kind] = ort.InferenceSession(str(p), sess_options=opts, providers=self.providers)
            except Exception as e:  # a truncated/corrupt cache entry: rebuild it once, say so once
                import warnings

                reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                warnings.warn(f"cached ONNX export {p} is unreadable ({reason}); rebuilding it", stacklevel=2)
                p.unlink(missing_ok=True)
                self.paths[kind] = p = export_onnx(model, size, kind, self.deform, precision, cache)
                self.sessions[kind] = ort.InferenceSession(str(p), sess_options=opts, providers=self.providers)
        self._ort = ort

    def _run(self, kind: str, feeds: dict[str, Tensor]) -> list[Tensor]:
        return self._run_session(self.sessions[kind], feeds)

    def _run_session(self, sess: Any, feeds: dict[str, Tensor]) -> list[Tensor]:
        if self.device.type == "cpu":
            outs = sess.run(None, {k: v.detach().contiguous().numpy() for k, v in feeds.items()})
            return [torch.from_numpy(o) for o in outs]
        # CUDA: bind torch buffers directly so frames never round-trip through the host.
        binding = sess.io_binding()
        idx = self.device.index or 0
        for name, t in feeds.items():
            t = t.detach().float().contiguous()
            binding.bind_input(name, "cuda", idx, _np_float32(), tuple(t.shape), t.data_ptr())
            feeds[name] = t  # keep alive until run
        outs = []
        for o in sess.get_outputs():
            buf = torch.empty(tuple(o.shape), device=self.device, dtype=torch.float32)
            binding.bind_output(o.name, "cuda", idx, _np_float32(), tuple(buf.shape), buf.data_ptr())
            outs.append(buf)
        # ORT runs on its own CUDA stream: torch must have written the inputs, and ORT finished the outputs.
        torch.cuda.current_stream(self.device).synchronize()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outs

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape) != (1, 3, *self.size):
            raise ValueError(f"onnx backend was exported for input (1, 3, {self.size[0]}, {self.size[1]}), "
                             f"got {tuple(x.shape)}")

    def embed(self, x: Tensor) -> Tensor:
        self._check(x)
        return self._run("embed", {"x": x})[0]

    def embed_batch(self, xs: Tensor) -> Tensor:
        n = int(xs.shape[0])
        if n == 1:
            return self.embed(xs)
        self.prepare_batch(n)
        return self._run_session(self._batch_sessions[n], {"x": xs})[0]

    def prepare_batch(self, n: int) -> None:
        """The batch-n embedding session: exported once per (shape, batch), cached on disk, loaded once."""
        if n == 1:
            return
        with self._batch_lock:
            if n not in self._batch_sessions:
                path = export_onnx(self.model, self.size, "embed", self.deform, self.precision, self._cache, batch=n)
                self._batch_sessions[n] = self._ort.InferenceSession(str(path), sess_options=self._opts,
                                                                     providers=self.providers)

    def match(self, e_ref: Tensor, e_tar: Tensor, prior: Tensor | None = None) -> Tensor:
        if "match" in self.sessions:
            feeds = {"prev_emb": e_ref, "emb": e_tar}
            if prior is not None:
                feeds["prior"] = prior
            return self._run("match", feeds)[0]
        # Fused models have no match graph (the Segmenter uses step()); eager match keeps the API whole.
        with torch.no_grad():
            return self.model.match(e_ref, e_tar, prior)

    def step(self, x: Tensor, prev_embedding: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        if not self.fused:
            emb = self.embed(x)
            return emb, self.match(prev_embedding, emb, prior)
        emb, flow = self._run("step", {"x": x, "prev_emb": prev_embedding})
        return emb, flow


def _np_float32() -> Any:
    import numpy as np

    return np.float32
