"""Issue #20: one front door for the data path.

The apps reach the library only through its public names; one box is the same box through the CLI, the live
view, `rtvos.track`, the service's streams file and the results; `Tracking.run()` builds no `Result`; latency
starts when the model could first run; a bad input is one line from the library's own check.
"""

from __future__ import annotations

import ast
import json
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import rtvos
from rtvos.apps.cli import main

APPS = Path(__file__).resolve().parent.parent / "apps"
#: What the apps may import: the top-level `rtvos` names, `rtvos.common` (the facts the parsers are built from
#: before torch loads) and the names in the `__init__` of these public packages. Everything else (`rtvos.io.*`,
#: `rtvos.pipeline`, `rtvos.track`, `rtvos.web`, `rtvos.serve.engine`, ...) is internal.
PUBLIC_PACKAGES = ("rtvos.models", "rtvos.eval", "rtvos.bench", "rtvos.serve", "rtvos.backends", "rtvos.training",
                   "rtvos.engines")
PUBLIC_MODULES = {"common", "viz", *(p.split(".")[1] for p in PUBLIC_PACKAGES)}  # `from rtvos import bench`

BOX = (20, 16, 80, 66)  # x1, y1, x2, y2 (x2/y2 exclusive): the object below, exactly
H, W = 96, 128


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every absolute rtvos import in a file, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "rtvos":
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "rtvos"]
    return found


def test_apps_import_only_the_public_api():
    import importlib

    apps = sorted(APPS.glob("*.py"))
    assert len(apps) >= 12, apps  # every app is checked, not a few
    bad = []
    for path in apps:
        for module, names, line in _imports(path):
            where = f"apps/{path.name}:{line}"
            if module == "rtvos":
                public = set(rtvos.__all__) | PUBLIC_MODULES
                bad += [f"{where}: rtvos.{n} is not public" for n in names if n not in public]
            elif module == "rtvos.common":
                continue
            elif module in PUBLIC_PACKAGES:
                exported = set(importlib.import_module(module).__all__)
                bad += [f"{where}: {module}.{n} is not in its __all__" for n in names if n not in exported]
            else:
                bad.append(f"{where}: imports the internal module {module}")
    assert not bad, "\n".join(bad)


def test_the_static_check_sees_an_internal_import(tmp_path):
    """The check above is not vacuous: it finds lazy imports of internal modules inside functions."""
    f = tmp_path / "x.py"
    f.write_text("def run():\n    from rtvos.io.sinks import MaskSink\n    import rtvos.pipeline\n")
    assert [m for m, _, _ in _imports(f)] == ["rtvos.io.sinks", "rtvos.pipeline"]


def _scene(folder: Path, n: int = 3) -> Path:
    """PNG frames (lossless): a red object filling BOX exactly on a blue background."""
    folder.mkdir(parents=True, exist_ok=True)
    img = np.zeros((H, W, 3), np.uint8)
    img[...] = (30, 40, 200)
    x1, y1, x2, y2 = BOX
    img[y1:y2, x1:x2] = (220, 30, 30)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:05d}.png"), img[..., ::-1])
    return folder


def _jsonl_boxes(path: Path) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in json.loads(line)["objects"][0]["box"]) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("flags", [["--box", "20,16,80,66"], ["--box", "20,16,60,50", "--box-format", "xywh"]])
def test_box_round_trip_through_the_cli(tmp_path, flags):
    frames = _scene(tmp_path / "frames")
    log = tmp_path / "log.jsonl"
    assert main(["segment", str(frames), *flags, "--out", str(tmp_path / "out"), "--jsonl", str(log), "--quiet"]) == 0
    assert _jsonl_boxes(log)[0] == BOX


def test_box_round_trip_through_track_results_and_the_streams_file(tmp_path):
    from rtvos.serve import StreamSpec

    frames = _scene(tmp_path / "frames")
    for boxes, fmt in (([BOX], "xyxy"), ("20,16,80,66", "xyxy"), ([(20, 16, 60, 50)], "xywh")):
        results = list(rtvos.track(str(frames), boxes=boxes, box_format=fmt))
        assert tuple(int(v) for v in results[0].boxes[0]) == BOX, (boxes, fmt)
    assert StreamSpec(id="a", source="x", box="20,16,80,66").all_boxes_xyxy == [BOX]
    assert StreamSpec(id="a", source="x", box=[20, 16, 60, 50], box_format="xywh").all_boxes_xyxy == [BOX]


def test_box_round_trip_through_the_live_view(tmp_path):
    """A box dragged in the browser (POST /box, x1,y1,x2,y2) is the first mask; the log has the same box."""
    frames = _scene(tmp_path / "frames")
    log = tmp_path / "log.jsonl"
    tracking = rtvos.track(str(frames), serve="127.0.0.1:0", jsonl=log, pace=False)
    view = tracking.view
    done: list[object] = []
    runner = threading.Thread(target=lambda: done.append(tracking.run()), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while json.loads(urllib.request.urlopen(view.url + "stats.json", timeout=10).read())["state"] != "selecting":
            assert time.monotonic() < deadline, "the live view never asked for a box"
            time.sleep(0.05)
        req = urllib.request.Request(view.url + "box", data=json.dumps({"boxes": [list(BOX)]}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        assert json.loads(urllib.request.urlopen(req, timeout=10).read())["boxes"] == [list(BOX)]
        runner.join(60)
        assert done and not runner.is_alive()
    finally:
        tracking.close()
    assert _jsonl_boxes(log)[0] == BOX


def test_run_builds_no_result(monkeypatch, tmp_path):
    import sys

    class NoResult:
        def __init__(self, *a: object, **k: object) -> None:
            raise AssertionError("a Result was built")

    monkeypatch.setattr(sys.modules["rtvos.track"], "Result", NoResult)  # rtvos.track the attribute is the function
    frames = _scene(tmp_path / "frames", 4)
    summary = rtvos.track(str(frames), boxes=[BOX]).run()
    assert summary.frames == 4 and not summary.interrupted
    with pytest.raises(AssertionError, match="a Result was built"):  # the patch is where iteration looks
        next(iter(rtvos.track(str(frames), boxes=[BOX])))


def test_latency_starts_when_the_first_mask_is_in_hand(tmp_path):
    """A person drawing the first box for 1.5 s is not latency: every frame read meanwhile (the read-ahead)
    starts its latency once the mask arrives. The summary says what latency counts."""
    wait_s = 1.5
    mask = np.zeros((H, W), np.uint8)
    x1, y1, x2, y2 = BOX
    mask[y1:y2, x1:x2] = 1

    def slow_first(frame: object) -> np.ndarray:
        time.sleep(wait_s)
        return mask

    tracking = rtvos.track(str(_scene(tmp_path / "frames", 5)), mask=slow_first)
    summary = tracking.run()
    assert summary.frames == 5 and summary.wall_s < wait_s  # fps/wall start at the first step, as before
    assert summary.latency_p95_ms is not None and summary.latency_p95_ms < 1000 * wait_s, summary
    assert "latency counts from when the model could take the frame" in summary.describe()


def test_bad_mask_path_is_one_line_from_the_library(tmp_path, capsys):
    frames = _scene(tmp_path / "frames")
    rc = main(["segment", str(frames), "--mask", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"rtvos segment: error: no such mask file: {tmp_path / 'nope.png'}"], err
    with pytest.raises(rtvos.InputError, match="no such mask file"):
        rtvos.track(str(frames), mask=tmp_path / "nope.png")
    assert not (tmp_path / "o").exists()


def test_a_stop_carries_its_reason(tmp_path):
    """`rtvos.Stopped("SIGTERM")` (what the CLI raises on SIGTERM) ends the run flushed, named by its reason."""
    from rtvos.io.sinks import Sink

    class StopAt(Sink):
        name = "stop"

        def write(self, item: object) -> None:
            if getattr(item, "frame_index") == 1:
                raise rtvos.Stopped("SIGTERM")

    tracking = rtvos.track(str(_scene(tmp_path / "frames", 5)), boxes=[BOX], sinks=[StopAt()], threaded=False)
    summary = tracking.run()
    assert summary.interrupted and summary.stop_reason == "SIGTERM", summary
