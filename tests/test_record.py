"""The per-frame JSON record: `Result.to_json()` and each `--jsonl` line are one layout, checked against one
schema (`rtvos/io/frame.schema.json`)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import rtvos
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.io.record import frame_schema
from rtvos.io.rle import rle_decode
from rtvos.io.sinks import JsonlSink


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict], list[np.ndarray], list[dict]]:
    clip = make_synthetic_clip(num_frames=6, height=96, width=128, num_objects=2, seed=5)
    log = tmp_path_factory.mktemp("rec") / "log.jsonl"
    docs, masks = [], []
    for r in rtvos.track(clip.frames, mask=clip.masks[0], size=64, backend="eager", device="cpu",
                         sinks=[JsonlSink(log), JsonlSink(log.with_name("norle.jsonl"), rle=False)]):
        docs.append(json.loads(json.dumps(r.to_json(), allow_nan=False)))
        masks.append(r.mask.copy())
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    norle = [json.loads(x) for x in log.with_name("norle.jsonl").read_text().splitlines()]
    return docs, lines, masks, norle


def test_schema_is_valid_and_package_data() -> None:
    jsonschema.Draft202012Validator.check_schema(frame_schema())
    assert Path(rtvos.__file__).parent.joinpath("io", "frame.schema.json").is_file()


def test_to_json_and_jsonl_lines_match_the_one_schema(run: tuple[list[dict], list[dict], list[np.ndarray], list[dict]]) -> None:
    docs, lines, masks, norle = run
    validator = jsonschema.Draft202012Validator(frame_schema())
    assert len(docs) == len(lines) == 6
    for doc, line, mask in zip(docs, lines, masks):
        validator.validate(doc)
        validator.validate(line)
        assert set(doc) == set(line)
        # The same frame, the same objects: only the times the sinks add after the loop saw it may differ.
        for key in ("frame_index", "source_index", "pts_s", "captured_s", "size", "anchored", "dropped", "step_ms", "objects"):
            assert doc[key] == line[key], key
        assert line["output_s"] is not None and line["latency_ms"] is not None
        for obj in line["objects"]:
            assert np.array_equal(rle_decode(obj["rle"]), mask == obj["id"])
    assert len(norle) == len(lines)
    for line in norle:
        validator.validate(line)
        assert all("rle" not in o for o in line["objects"])


def test_schema_rejects_the_old_layouts() -> None:
    """A record with per-id dicts (the old JSONL layout) or timings_ms (the old to_json) is not this record."""
    validator = jsonschema.Draft202012Validator(frame_schema())
    good = {"frame_index": 0, "source_index": 0, "pts_s": None, "captured_s": 1.0, "size": [4, 4], "anchored": True,
            "dropped": 0, "step_ms": 1.0, "stages_ms": {}, "output_s": None, "latency_ms": None,
            "objects": [{"id": 1, "area": 3, "box": [0, 0, 2, 2]}]}
    validator.validate(good)
    assert not validator.is_valid({**good, "objects": {"1": 3}})
    assert not validator.is_valid({**good, "timings_ms": {}})
    assert not validator.is_valid({**good, "objects": [{"id": 1, "area": 3, "box": [0, 0, 2]}]})
