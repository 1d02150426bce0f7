"""rtvos.common: facts shared by the library and the apps, each defined once."""

from __future__ import annotations

import pytest
import torch

from rtvos.common import BUILTIN_BACKENDS, PRECISIONS, STAGES, check_precision, one_line, stage_order


def test_precision_check_is_the_one_every_backend_uses() -> None:
    from rtvos.backends import EagerBackend
    from rtvos.models import create_model

    assert check_precision("fp16") == "fp16" and PRECISIONS == ("fp32", "fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, got 'int8'"):
        check_precision("int8")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, got 'bf16'"):
        EagerBackend(create_model("rpmnet_r18"), (64, 64), torch.device("cpu"), "bf16")


def test_builtin_backends_are_the_registry() -> None:
    from rtvos.backends import list_backends

    assert tuple(list_backends()[: len(BUILTIN_BACKENDS)]) == BUILTIN_BACKENDS


def test_stage_order() -> None:
    assert stage_order(["encode", "zeta", "match", "flow", "decode", "alpha", "embed"]) == [
        "decode", "embed", "flow", "match", "encode", "alpha", "zeta"]
    assert len(set(STAGES)) == len(STAGES)


def test_one_line() -> None:
    assert one_line(ValueError("bad thing\n  detail")) == "bad thing"
    assert one_line(ValueError("bad thing\n"), with_type=True) == "ValueError: bad thing"
    assert one_line(KeyError()) == "KeyError"


def test_lazy_attributes_import_on_first_use_and_refuse_unknown_names() -> None:
    """The one PEP 562 helper behind rtvos.eval, rtvos.serve and engines: names load on first use and stay."""
    import types

    from rtvos.common import lazy_attributes

    ns: dict[str, object] = {}
    getattr_ = lazy_attributes("rtvos", {"Timer": ".stats"}, ns)
    from rtvos.stats import Timer

    assert getattr_("Timer") is Timer and ns["Timer"] is Timer
    with pytest.raises(AttributeError, match="module 'rtvos' has no attribute 'nope'"):
        getattr_("nope")
    import rtvos.serve

    assert isinstance(rtvos.serve, types.ModuleType) and rtvos.serve.StreamSpec.__module__ == "rtvos.serve.config"
