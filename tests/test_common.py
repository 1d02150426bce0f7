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
