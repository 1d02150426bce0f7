"""`rtvos serve`: the streams file, the HTTP API and the service's endings (issue #19, item 2)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest

from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip

pytest.importorskip("fastapi")  # the serve extra; part of .[dev], so CI runs these

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
MODEL = "size: 64\nbackend: eager\ndevice: cpu\n"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-clips")
    return [write_synthetic_clip(make_synthetic_clip(num_frames=n, height=96, width=128, num_objects=2, seed=i),
                                 root / f"c{i}") for i, n in enumerate((15, 15, 200))]


def _frames(path: Path) -> int:
    with av.open(str(path)) as f:
        return sum(1 for _ in f.decode(video=0))


def _serve(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "rtvos", "serve", *map(str, args)], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_until_done_writes_every_stream_completely(clips, tmp_path):
    a, b, _ = clips
    (tmp_path / "streams.yaml").write_text(MODEL + f"""streams:
  - id: cam0
    source: {a.video}
    mask: {a.first_mask}
    out: out/cam0
    jsonl: out/cam0.jsonl
  - id: cam1
    source: {b.frames_dir}
    mask: {b.first_mask}
    out: out/cam1
  - id: cam2
    source: {a.video}
    box: 10,10,40,40
    out: out/cam2
    mask_video: out/cam2_masks.mp4
""")
    p = _serve([tmp_path / "streams.yaml", "--until-done", "--port", "0"], cwd=tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "all file streams ended" in err and "API http://127.0.0.1:" in err
    for cam in ("cam0", "cam1", "cam2"):
        pngs = sorted(x.name for x in (tmp_path / "out" / cam).glob("*.png"))
        assert pngs == [f"{k:05d}.png" for k in range(15)], cam
        assert _frames(tmp_path / "out" / cam / "overlay.mp4") == 15, cam
        assert f"{cam}: done, 15 frames" in out
    assert [json.loads(x)["frame_index"] for x in (tmp_path / "out/cam0.jsonl").read_text().splitlines()] == list(range(15))
    assert _frames(tmp_path / "out/cam2_masks.mp4") == 15


def test_sigterm_flushes_every_stream(clips, tmp_path):
    _, b, c = clips
    (tmp_path / "streams.yaml").write_text(MODEL + f"""streams:
  - id: slow
    source: {c.video}
    mask: {c.first_mask}
    out: out/slow
    jsonl: out/slow.jsonl
    pace: true
  - id: fast
    source: {b.video}
    mask: {b.first_mask}
    out: out/fast
""")
    p = _serve([tmp_path / "streams.yaml", "--port", "0"], cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while len(list((tmp_path / "out/slow").glob("*.png"))) < 5 and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1]
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert "rtvos serve: SIGTERM" in err
    n = len(list((tmp_path / "out/slow").glob("*.png")))
    assert 5 <= n < 200
    assert len((tmp_path / "out/slow.jsonl").read_text().splitlines()) == n  # flushed: log and PNGs agree
    assert _frames(tmp_path / "out/slow/overlay.mp4") == n  # a finalised MP4 with every frame
    fast = next(line for line in out.splitlines() if line.startswith("fast: "))
    k = int(fast.split(", ")[1].split()[0])  # "fast: done|stopped, K frames, ..."
    assert len(list((tmp_path / "out/fast").glob("*.png"))) == k and _frames(tmp_path / "out/fast/overlay.mp4") == k


@pytest.mark.parametrize("text, expected", [
    ("streams: [\n", "is not valid YAML at line 2"),
    ("streams:\n  - id: a\n    source: x.mp4\n    box: 10,10,0,5\n", "streams.0.box: box 10,10,0,5 must have a positive width"),
    ("streams:\n  - id: a\n    source: x.mp4\n", "a first-frame prompt is needed"),
    ("streams:\n  - id: a\n    source: missing.mp4\n    box: 1,1,5,5\n", "stream a: no such file or folder"),
])
def test_bad_streams_file_is_one_line_exit_2(tmp_path, capsys, text, expected):
    from rtvos.apps.cli import main

    (tmp_path / "s.yaml").write_text(MODEL + text if "missing" in text else text)
    assert main(["serve", str(tmp_path / "s.yaml"), "--until-done", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtvos serve: error: ") and expected in err and "\n" not in err, err


@pytest.fixture
def api(clips):
    from fastapi.testclient import TestClient

    from rtvos.serve.app import create_app
    from rtvos.serve.engine import LocalEngine
    from rtvos.serve.metrics import Metrics

    engine = LocalEngine(size=64, backend="eager", device="cpu")
    metrics = Metrics(engine.status)
    loop = threading.Thread(target=engine.run, kwargs={"on_frame": metrics.observe})
    loop.start()
    try:
        with TestClient(create_app(engine, metrics), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        engine.stop()
        loop.join(60)
        engine.close()
    assert not loop.is_alive()


def _one_line_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and body["error"]
    return body["error"]


def test_api_add_list_metrics_remove(api, clips, tmp_path):
    _, _, c = clips
    spec = {"id": "cam9", "source": str(c.video), "mask": str(c.first_mask), "out": str(tmp_path / "o"), "pace": True}
    r = api.post("/streams", json=spec)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "cam9"
    deadline = time.time() + 60
    while api.get("/streams/cam9").json()["frames"] < 3 and time.time() < deadline:
        time.sleep(0.1)
    assert [s["id"] for s in api.get("/streams").json()] == ["cam9"]
    text = api.get("/metrics").text
    assert 'rtvos_stream_frames_total{stream="cam9"}' in text and "rtvos_stream_latency_seconds_bucket" in text
    assert "rtvos_stream_up" in text
    assert _one_line_error(api.post("/streams", json=spec), 409).startswith("stream cam9: stream 'cam9' already exists")
    assert api.post("/streams/cam9/reanchor", json={"boxes": ["10,10,30,30"]}).status_code == 202
    gone = api.delete("/streams/cam9")
    assert gone.status_code == 200 and gone.json()["state"] == "removed"
    n = gone.json()["frames"]
    assert len(list((tmp_path / "o").glob("*.png"))) == n and _frames(tmp_path / "o/overlay.mp4") == n
    assert api.get("/streams").json() == []
    assert 'stream="cam9"' not in api.get("/metrics").text.split("rtvos_stream_latency")[1]


def test_api_validation_is_4xx_one_line(api, clips):
    a = clips[0]
    assert "no stream 'nope'" in _one_line_error(api.get("/streams/nope"), 404)
    _one_line_error(api.delete("/streams/nope"), 404)
    _one_line_error(api.post("/streams/nope/reanchor", json={"boxes": ["1,1,5,5"]}), 404)
    bad_box = {"id": "x", "source": str(a.video), "box": "10,10,-4,5"}
    assert "box 10,10,-4,5 must have a positive width" in _one_line_error(api.post("/streams", json=bad_box), 422)
    assert "is not valid YAML" in _one_line_error(
        api.post("/streams", content="id: [x\n", headers={"content-type": "application/yaml"}), 400)
    yaml_ok = f"id: y\nsource: {a.video}\nbox: 10,10,40,40\nmax_frames: 2\n"
    assert api.post("/streams", content=yaml_ok, headers={"content-type": "application/yaml"}).status_code == 201
    assert "no such file" in _one_line_error(api.post("/streams", json={**bad_box, "box": "1,1,5,5",
                                                                         "source": "/no/such.mp4"}), 400)
    assert "extra" in _one_line_error(api.post("/streams", json={**bad_box, "box": "1,1,5,5", "colour": 1}), 422).lower()
    assert "boxes and/or points" in _one_line_error(api.post("/streams/y/reanchor", json={}), 422)
    _one_line_error(api.post("/streams", content="x" * 70000, headers={"content-type": "application/json"}), 413)
    _one_line_error(api.get("/streams", headers={"host": "evil.example:8321"}), 421)
    assert api.get("/docs").status_code == 200 and "/streams" in api.get("/openapi.json").text


def test_the_operator_docs_streams_file_is_valid():
    import re

    from rtvos.serve.config import parse_config

    text = (Path(__file__).parents[1] / "docs" / "serve.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    cfg = parse_config(block, "docs/serve.md")
    assert [s.id for s in cfg.streams] == ["cam1", "door", "archive"]
    assert cfg.streams[2].all_boxes_xyxy == [(10, 10, 60, 90), (200, 40, 260, 100)]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(# streams.yaml.*?)```", readme, re.S).group(1)
    cfg = parse_config(block, "README.md")
    assert [s.id for s in cfg.streams] == ["cam1", "door"]
    assert cfg.streams[1].all_boxes_xyxy == [(120, 40, 320, 340)]


def test_live_view_shows_each_stream_cheaply(clips, tmp_path):
    """Issue #19: `rtvos serve` shows every stream in the live view on its own server (/live/); a stream's overlay
    is drawn only while a browser watches it, and at most LIVE_VIEW_FPS times a second."""
    import http.client
    import urllib.error
    import urllib.request

    from rtvos.serve.app import create_app
    from rtvos.serve.config import StreamSpec
    from rtvos.serve.engine import LIVE_VIEW_FPS, LocalEngine
    from rtvos.serve.metrics import Metrics
    from rtvos.server import HttpServer
    from rtvos.web import LiveHub

    _, _, c = clips  # 200 frames, paced at the clip's rate: it runs for seconds
    hub = LiveHub()
    engine = LocalEngine(size=64, backend="eager", device="cpu", hub=hub)
    metrics = Metrics(engine.status)
    loop = threading.Thread(target=engine.run, kwargs={"on_frame": metrics.observe})
    loop.start()
    server = HttpServer(create_app(engine, metrics, hub=hub), "127.0.0.1", 0)
    base = server.url.rstrip("/")
    conn = None
    try:
        for sid in ("cam1", "cam2"):
            engine.add(StreamSpec.model_validate({"id": sid, "source": str(c.video), "mask": str(c.first_mask),
                                                  "pace": True}))
        page = urllib.request.urlopen(base + "/live/", timeout=10).read().decode()
        assert "stream.mjpg" in page and "../streams" in page
        assert b"each object" in urllib.request.urlopen(base + "/live/cam1/", timeout=10).read()
        deadline = time.time() + 60
        while engine.status("cam1")[0]["frames"] < 10 and time.time() < deadline:
            time.sleep(0.1)
        doc = json.loads(urllib.request.urlopen(base + "/live/cam1/stats.json", timeout=10).read())
        assert doc["state"] == "segmenting" and doc["stats"]["frame_index"] >= 5
        assert doc["frames"] == 0, "an overlay was drawn while nobody watched"

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        conn.request("GET", "/live/cam1/stream.mjpg")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("multipart/x-mixed-replace")
        jpegs, t0 = [], time.monotonic()
        while len(jpegs) < 8:
            line = resp.readline()
            if line.lower().startswith(b"content-length:"):
                resp.readline()
                jpegs.append(resp.read(int(line.split(b":")[1])))
        rate = (len(jpegs) - 1) / (time.monotonic() - t0)
        assert rate <= LIVE_VIEW_FPS * 1.5, rate  # the clip runs at 25 fps; the view draws at most 10
        import cv2
        import numpy as np

        assert cv2.imdecode(np.frombuffer(jpegs[-1], np.uint8), cv2.IMREAD_COLOR).shape == (96, 128, 3)
        assert json.loads(urllib.request.urlopen(base + "/live/cam2/stats.json", timeout=10).read())["frames"] == 0
        # Boxes dragged on a stream's page re-anchor that stream (x1,y1,x2,y2).
        req = urllib.request.Request(base + "/live/cam1/reanchor", data=b'{"boxes": [[10, 10, 60, 50]]}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        assert json.loads(urllib.request.urlopen(req, timeout=10).read()) == {"ok": True, "boxes": [[10, 10, 60, 50]]}

        try:
            urllib.request.urlopen(base + "/live/nope/stats.json", timeout=10)
            raise AssertionError("an unknown stream answered")
        except urllib.error.HTTPError as e:
            assert e.code == 404 and "nope" in json.loads(e.read())["error"]
        bad = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        bad.request("GET", "/live/cam1/stats.json", headers={"Host": "evil.example"})
        assert bad.getresponse().status == 421
        bad.close()
    finally:
        if conn is not None:
            conn.close()
        hub.close()
        server.close()
        engine.stop()
        loop.join(60)
        engine.close()
    assert not loop.is_alive()
