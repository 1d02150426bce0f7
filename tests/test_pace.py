"""Files paced to real time for a person watching, and the live view kept up after the end (issue #20, item 8).

Timings assert lower bounds only, with a wide margin: a busy machine can make a run slower, never faster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

import rtvos
from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
from rtvos.io.pace import PacedSource, paced
from rtvos.track import ArraySource


def _frames(n: int) -> list[np.ndarray]:
    return [np.full((24, 32, 3), 10 * i, np.uint8) for i in range(n)]


def test_a_paced_file_takes_its_duration():
    n, fps = 12, 20.0
    src = PacedSource(ArraySource(_frames(n), fps=fps))
    t0 = time.perf_counter()
    got = list(src)
    took = time.perf_counter() - t0
    assert [f.source_index for f in got] == list(range(n))
    assert took >= 0.7 * (n - 1) / fps, took  # (n-1)/fps = 0.55 s; unpaced it is ~1 ms
    assert all(f.captured_s is not None for f in got)
    assert got[-1].captured_s - got[0].captured_s >= 0.7 * (n - 1) / fps  # stamped when due, as a camera would
    assert (src.name, src.fps, src.is_live, src.num_frames) == ("frames", fps, False, n)


def test_unpaced_frames_catch_up_then_the_clock_starts():
    """A stream resumed at frame k replays frames 0..k at decode speed, then plays on in real time."""
    n, fps, unpaced = 12, 20.0, 6
    t0 = time.perf_counter()
    got = []
    for f in PacedSource(ArraySource(_frames(n), fps=fps), unpaced=unpaced):
        got.append((f.source_index, time.perf_counter() - t0))
    assert [k for k, _ in got] == list(range(n))
    assert got[unpaced][1] < 0.5 * unpaced / fps  # frames 0..unpaced-1 did not wait (paced: 0.3 s)
    paced_span = got[-1][1] - got[unpaced][1]
    assert paced_span >= 0.7 * (n - 1 - unpaced) / fps, paced_span  # the clock runs from frame `unpaced` on
    assert got[-1][1] < 0.7 * (n - 1) / fps  # ... not from frame 0
    with pytest.raises(ValueError, match="unpaced"):
        PacedSource(ArraySource(_frames(1), fps=fps), unpaced=-1)


def test_track_paces_on_request_only():
    n, fps = 10, 25.0
    clip = make_synthetic_clip(num_frames=n, height=48, width=64, seed=1)
    box = (8, 8, 56, 40)
    t0 = time.perf_counter()
    with rtvos.track(np.stack(clip.frames), boxes=[box], fps=fps, pace=True, device="cpu") as run:
        assert sum(1 for _ in run) == n
    assert time.perf_counter() - t0 >= 0.7 * (n - 1) / fps


def test_live_sources_are_not_paced_and_close_wakes_a_waiting_reader():
    live = ArraySource(_frames(2))
    live.is_live = True  # a camera: real time already
    assert paced(live) is live
    src = paced(ArraySource(_frames(3), fps=0.2))  # 5 s between frames
    assert paced(src) is src
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.extend(f.source_index for f in src))
    reader.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    src.close()
    reader.join(5)
    assert not reader.is_alive() and got == [0] and time.perf_counter() - t0 < 2.0


def test_segment_serve_keeps_the_page_up_after_the_end_until_ctrl_c(tmp_path):
    """`rtvos segment FILE --serve`: frames at the clip's rate, then the page stays up (state "ended") and the
    process says so, until Ctrl-C."""
    clip = make_synthetic_clip(num_frames=12, height=64, width=80, seed=2)  # 24 fps: ~0.5 s paced
    paths = write_synthetic_clip(clip, tmp_path / "clip", as_frames=False)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.Popen([sys.executable, "-m", "rtvos", "segment", str(paths.video), "--mask", str(paths.first_mask),
                          "--out", str(tmp_path / "out"), "--serve", "127.0.0.1:0", "--quiet"],
                         env=env, text=True, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    lines: list[str] = []
    try:
        assert p.stderr is not None
        url = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            assert line, f"rtvos exited early: {''.join(lines)}"
            lines.append(line)
            if url is None and (m := re.search(r"live view at (http://\S+/)", line)):
                url = m.group(1)
            if "stays up" in line:
                break
        assert url and "until Ctrl-C" in lines[-1], lines
        assert p.poll() is None  # the run is over, the server is not
        doc = json.loads(urllib.request.urlopen(url + "stats.json", timeout=10).read())
        assert doc["state"] == "ended" and doc["frames"] == clip.num_frames
        assert urllib.request.urlopen(url + "healthz", timeout=10).read() == b"ok\n"
        assert len(list((tmp_path / "out").glob("*.png"))) == clip.num_frames  # outputs already complete
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.parametrize("flag", ["--exit-at-end"])
def test_segment_serve_exit_at_end_and_no_pace(tmp_path, flag):
    clip = make_synthetic_clip(num_frames=6, height=64, width=80, seed=3)
    paths = write_synthetic_clip(clip, tmp_path / "clip", as_frames=False)
    r = subprocess.run([sys.executable, "-m", "rtvos", "segment", str(paths.video), "--mask", str(paths.first_mask),
                        "--out", str(tmp_path / "out"), "--serve", "127.0.0.1:0", "--quiet", flag, "--no-pace"],
                       env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "stays up" not in r.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == clip.num_frames
