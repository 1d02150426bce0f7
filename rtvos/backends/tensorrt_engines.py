"""Build serialized TensorRT engines for the RPM-Net step and cache them in the user cache directory.

Why a cache: an engine build takes tens of seconds to minutes, and an engine is only valid for the exact
weights, input shape, precision, TensorRT version and GPU it was built for — so those five make the key.
Engines live in `$RTVOS_ENGINE_DIR` if set, else `engines/` under the rtvos user cache root (`rtvos.cache`:
`$RTVOS_CACHE_DIR`, else `$XDG_CACHE_HOME/rtvos` or `~/.cache/rtvos`), never inside the installed package.

Two build routes, both producing serialized engine bytes run by `rtvos.backends.tensorrt`:

* ``torch_tensorrt`` (the default): `torch.export` the step, then Torch-TensorRT converts it, with the
  `rtvos::deform_conv2d` node mapped to the plugin of `rtvos.backends.tensorrt_plugin`.
* ``onnx``: the step exported with deform="gridsample" (GridSample + MatMul, no plugin), parsed by TensorRT's
  ONNX parser. Needs nothing beyond TensorRT itself; the parse (network definition) works without a GPU.

Status: the ONNX parse runs on CPU (tested with TensorRT-RTX 1.6.1); the engine builds and both routes'
inference need an NVIDIA GPU and have NEVER BEEN RUN.

This is the library's home of the engine builder; `engines/build.py` re-exports it. Imports go one way:
`rtvos.backends.tensorrt` → this module → `tensorrt_plugin`, `onnx`, `compiled`; nothing here imports
`rtvos.backends.tensorrt`, `engines` or `plugins`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import torch

from ..cache import user_cache_dir
from ..common import check_precision

if TYPE_CHECKING:
    from ..models.rpmnet import RPMNet

__all__ = [
    "ROUTES",
    "ParsedNetwork",
    "build_engine",
    "engine_dir",
    "engine_key",
    "engine_path",
    "gpu_name",
    "parse_onnx_network",
]

ROUTES = ("torch_tensorrt", "onnx")


def engine_dir() -> Path:
    """`$RTVOS_ENGINE_DIR` if set, else `engines/` in the rtvos user cache (`rtvos.cache.user_cache_dir`)."""
    env = os.environ.get("RTVOS_ENGINE_DIR")
    return Path(env).expanduser() if env else user_cache_dir("engines")


def gpu_name(device: torch.device | None = None) -> str:
    if not torch.cuda.is_available():
        return "nogpu"
    idx = (device.index if device is not None and device.index is not None else torch.cuda.current_device())
    props = torch.cuda.get_device_properties(idx)
    return f"{props.name} sm{props.major}{props.minor}"


def engine_key(
    model_hash: str, size: tuple[int, int], precision: str, trt_version: str, gpu: str, route: str, kind: str
) -> str:
    payload = json.dumps(
        {"model": model_hash, "size": list(size), "precision": precision, "trt": trt_version, "gpu": gpu,
         "route": route, "kind": kind},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def engine_path(key: str, kind: str, size: tuple[int, int], precision: str) -> Path:
    return engine_dir() / f"{kind}-{size[0]}x{size[1]}-{precision}-{key}.engine"


@dataclass
class ParsedNetwork:
    """The network plus the builder/parser/logger it depends on (a network must not outlive its builder)."""

    builder: Any
    network: Any
    parser: Any
    logger: Any
    layer_types: list[str]


def parse_onnx_network(trt: ModuleType, onnx_path: Path, strongly_typed: bool = False) -> ParsedNetwork:
    """TensorRT network definition from an ONNX file. No GPU needed."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    types = [str(network.get_layer(i).type).split(".")[-1] for i in range(network.num_layers)]
    return ParsedNetwork(builder, network, parser, logger, types)


def _build_via_onnx(model: torch.nn.Module, size: tuple[int, int], precision: str, kind: str) -> bytes:
    from .onnx import export_onnx
    from .tensorrt_plugin import import_tensorrt

    trt = import_tensorrt()
    path = export_onnx(cast("RPMNet", model), size, kind, "gridsample")
    parsed = parse_onnx_network(trt, path)
    builder, network = parsed.builder, parsed.network
    config = builder.create_builder_config()
    if precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    return bytes(serialized)


def _build_via_torch_tensorrt(model: torch.nn.Module, size: tuple[int, int], precision: str, kind: str,
                              device: torch.device) -> bytes:
    import torch_tensorrt

    from .compiled import EmbedModule, StepModule
    from .tensorrt_plugin import register_converter

    register_converter()
    h, w = size
    x = torch.rand(1, 3, h, w, device=device)
    args: tuple[torch.Tensor, ...] = (x,) if kind == "embed" else (x, torch.rand(1, 32, h // 4, w // 4, device=device))
    rpm = cast("RPMNet", model)
    module = (EmbedModule(rpm) if kind == "embed" else StepModule(rpm)).eval().to(device)
    with torch.no_grad():
        ep = torch.export.export(module, args, strict=False)
    fn = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {"arg_inputs": list(args), "device": device, "require_full_compilation": True}
    if "enabled_precisions" in params:
        kwargs["enabled_precisions"] = {torch.float16, torch.float32} if precision == "fp16" else {torch.float32}
    if "use_explicit_typing" in params and precision == "fp16":
        kwargs["use_explicit_typing"] = False
    return bytes(fn(ep, **kwargs))


def build_engine(
    model: torch.nn.Module,
    size: tuple[int, int],
    precision: str = "fp16",
    kind: str = "step",
    route: str = "torch_tensorrt",
    device: torch.device | None = None,
    force: bool = False,
) -> Path:
    """Build (or reuse) the engine for `kind` ("step" or "embed") and return its cached path."""
    from .onnx import model_hash
    from .tensorrt_plugin import import_tensorrt

    check_precision(precision)
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if kind not in ("step", "embed"):
        raise ValueError(f"kind must be 'step' or 'embed', got {kind!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("building a TensorRT engine needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    device = device or torch.device("cuda", torch.cuda.current_device())
    trt = import_tensorrt()
    key = engine_key(model_hash(model), size, precision, trt.__version__, gpu_name(device), route, kind)
    path = engine_path(key, kind, size, precision)
    if path.is_file() and not force:
        return path
    model = model.eval()
    if route == "onnx":
        data = _build_via_onnx(model, size, precision, kind)
    else:
        data = _build_via_torch_tensorrt(model, size, precision, kind, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".engine.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    meta = {"size": list(size), "precision": precision, "tensorrt": trt.__version__, "gpu": gpu_name(device),
            "route": route, "kind": kind}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path
