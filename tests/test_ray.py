"""`rtvos serve --engine ray`: streams on Ray actors and recovery from a SIGKILLed worker (issue #19, item 3).

One local two-node cluster (`ray.cluster_utils.Cluster`, both nodes on 127.0.0.1) for the module; its processes
are stopped and its temp folder removed at the end.
"""

import os
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
import pytest

from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
from rtvos.io import InputError, read_mask

ray = pytest.importorskip("ray")  # the ray extra; part of .[dev], so CI runs these

from rtvos.serve.config import StreamSpec  # noqa: E402
from rtvos.serve.ray_engine import RayEngine, _keep_loopback  # noqa: E402

FRAMES = 60
# The default model (DIS + the appearance stage). A recovered file stream restores the worker's latest Segmenter
# snapshot and replays the frames after it silently, so it continues from the same state: a re-anchor on the
# checkpointed mask alone restarts the colour model and drifted to IoU 0.89 within 15 frames here.
OPTS = dict(size=64, backend="eager", device="cpu")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rtvos-ray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    _keep_loopback(ray)
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                          "include_dashboard": False})
        c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if c is not None:
            c.shutdown()
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def _iou(a, b):
    inter, union = np.logical_and(a > 0, b > 0).sum(), np.logical_or(a > 0, b > 0).sum()
    return inter / union if union else 1.0


def test_sigkill_of_a_worker_resumes_its_streams_from_the_checkpoint(cluster, tmp_path):
    clip = write_synthetic_clip(make_synthetic_clip(num_frames=FRAMES, height=96, width=128, num_objects=2, seed=5),
                                tmp_path / "clip")
    engine = RayEngine(workers=2, address=cluster.address, keep_frame_numbers=True, **OPTS)
    try:
        # The same clip twice, one stream per actor (two nodes of one CPU each): "b" is the uninterrupted run.
        for sid in ("a", "b"):
            engine.add(StreamSpec(id=sid, source=str(clip.video), mask=str(clip.first_mask), out=str(tmp_path / sid),
                                  jsonl=str(tmp_path / f"{sid}.jsonl"), pace=True))
        assert {engine.streams["a"].actor, engine.streams["b"].actor} == {0, 1}
        with pytest.raises(InputError, match="no such file"):
            engine.add(StreamSpec(id="c", source=str(tmp_path / "missing.mp4"), box="1,1,5,5"))
        pids = engine.pids()
        loop = threading.Thread(target=engine.run, kwargs={"until_done": True})
        loop.start()
        deadline = time.time() + 120
        while engine.streams["a"].frames < 10 and time.time() < deadline:
            time.sleep(0.02)
        killed_after = engine.streams["a"].frames
        assert killed_after >= 10 and engine.status("a")[0]["state"] == "running"
        os.kill(pids[engine.streams["a"].actor], signal.SIGKILL)
        loop.join(300)
        assert not loop.is_alive()
        a, b = engine.status("a")[0], engine.status("b")[0]
    finally:
        engine.close()
    assert a["state"] == "done" and a["restarts"] == 1 and len(a["recovery_s"]) == 1
    assert a["recovery_s"][0] < 60  # measured ~2-6 s here; the benchmark reports the distribution
    assert b["state"] == "done" and b["restarts"] == 0
    # Exactly once: every frame written, none twice, in order, for both streams.
    for sid in ("a", "b"):
        assert engine.streams[sid].frame_numbers == list(range(FRAMES)), sid
        pngs = sorted(p.name for p in (tmp_path / sid).glob("*.png"))
        assert pngs == [f"{k:05d}.png" for k in range(FRAMES)], sid
        lines = (tmp_path / f"{sid}.jsonl").read_text().splitlines()
        assert [int(x.split('"frame_index":')[1].split(",")[0]) for x in lines] == list(range(FRAMES)), sid
    # The 25 frames after the re-anchor follow the uninterrupted run (the goal is IoU >= 0.9; restored from the
    # snapshot they are the same masks, which is what 0.999 checks).
    (resumed,) = a["resumed_from"]  # the checkpoint's frame: the last one written before the kill
    assert resumed >= killed_after - 1 and resumed + 25 < FRAMES
    for k in range(resumed + 1, resumed + 26):
        ka, kb = read_mask(tmp_path / "a" / f"{k:05d}.png")[0], read_mask(tmp_path / "b" / f"{k:05d}.png")[0]
        assert _iou(ka, kb) >= 0.999, k
    assert not ray.is_initialized()  # the engine disconnected; the module's cluster is still up for others


def test_cli_serve_on_the_cluster_until_done(cluster, tmp_path):
    import subprocess
    import sys

    clip = write_synthetic_clip(make_synthetic_clip(num_frames=12, height=96, width=128, num_objects=2, seed=6),
                                tmp_path / "clip")
    (tmp_path / "streams.yaml").write_text(f"""size: 64
backend: eager
device: cpu
streams:
  - id: a
    source: {clip.video}
    mask: {clip.first_mask}
    out: out/a
  - id: b
    source: {clip.frames_dir}
    box: 10,10,40,40
    out: out/b
""")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.run([sys.executable, "-m", "rtvos", "serve", "streams.yaml", "--until-done", "--port", "0",
                        "--engine", "ray", "--workers", "2", "--address", cluster.address], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "engine ray" in p.stderr and "all file streams ended" in p.stderr
    for sid in ("a", "b"):
        assert f"{sid}: done, 12 frames" in p.stdout
        assert sorted(x.name for x in (tmp_path / "out" / sid).glob("*.png")) == [f"{k:05d}.png" for k in range(12)]


def test_cli_serve_on_ray_flushes_on_sigterm(cluster, tmp_path):
    import subprocess
    import sys

    clip = write_synthetic_clip(make_synthetic_clip(num_frames=200, height=96, width=128, num_objects=2, seed=7),
                                tmp_path / "clip", as_frames=False)
    (tmp_path / "streams.yaml").write_text(f"""size: 64
backend: eager
device: cpu
streams:
  - id: a
    source: {clip.video}
    mask: {clip.first_mask}
    out: out/a
    jsonl: out/a.jsonl
    pace: true
""")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.Popen([sys.executable, "-m", "rtvos", "serve", "streams.yaml", "--port", "0", "--engine", "ray",
                          "--workers", "1", "--address", cluster.address], cwd=tmp_path, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while len(list((tmp_path / "out/a").glob("*.png"))) < 5 and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)  # ray.init's own SIGTERM handler (sys.exit) must not win over the CLI's
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err[-2000:]
    assert "rtvos serve: SIGTERM" in err and "a: stopped" in out
    n = len(list((tmp_path / "out/a").glob("*.png")))
    assert 5 <= n < 200 and len((tmp_path / "out/a.jsonl").read_text().splitlines()) == n
