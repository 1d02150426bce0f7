"""Issue #18 (hardening): full disks, double signals, clashing output paths, shared Segmenters, bad prompts.

Each test reproduces one defect with real parts (a real tmpfs, real signals to a real `rtvos` process, real
threads) and fails on the code before the fix.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip

S = 64
RTVOS = [sys.executable, "-m", "rtvos"]


def _decoded(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    """mount(size) -> a fresh tmpfs of that size under tmp_path (skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()[:120]}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    c = make_synthetic_clip(num_frames=12, height=96, width=128, num_objects=2, seed=3)
    return c, write_synthetic_clip(c, tmp_path_factory.mktemp("clip"), as_frames=False)


# ----------------------------------------------------------------------------------------------- 1: full disk

_FILL_THEN_CLOSE = """
import sys, numpy as np
from rtvos.io.writer import VideoWriter
w = VideoWriter(sys.argv[1], fps=25)
rng = np.random.default_rng(0)
try:
    for i in range(400):
        w.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
        if i == 5:  # another file takes the rest of the disk
            try:
                with open(sys.argv[2], "wb") as f:
                    f.write(b"x" * 10_000_000)
            except OSError:
                pass
except OSError as e:
    print("write failed", e.errno, flush=True)
try:
    w.write(np.zeros((240, 320, 3), np.uint8))
except OSError as e:
    print("later write refused", e.errno, flush=True)
try:
    w.close()
except OSError as e:
    print("close failed", e.errno, flush=True)
print("closed", flush=True)
"""


def test_writer_closed_after_a_full_disk_does_not_crash(tmpfs):
    """#1 at its mechanism: after a failed mux, closing the writer used to flush the encoder into the failed
    muxer, which crashed the process (SIGSEGV)."""
    small = tmpfs("64k")
    r = subprocess.run([sys.executable, "-c", _FILL_THEN_CLOSE, str(small / "a.mp4"), str(small / "fill")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    assert "write failed 28" in r.stdout and "later write refused 28" in r.stdout and "closed" in r.stdout


def test_segment_jsonl_on_a_full_disk_exits_1_with_a_summary(tmpfs):
    """#1: `rtvos segment --out small/o --jsonl small/log.jsonl` on a 64 KiB tmpfs was rc 139 (segfault)."""
    small = tmpfs("64k")
    r = subprocess.run([*RTVOS, "segment", "--out", str(small / "o"), "--jsonl", str(small / "log.jsonl"),
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.returncode, r.stderr[-800:])
    lines = r.stderr.strip().splitlines()
    assert "no space left on the device" in lines[-1] and str(small) in lines[-1]
    assert "processed before stopping" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------- 2: double Ctrl-C


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    c = make_synthetic_clip(num_frames=400, height=360, width=640, num_objects=1, seed=4)
    return c, write_synthetic_clip(c, tmp_path_factory.mktemp("long"), as_frames=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_the_flush_keeps_a_playable_overlay(long_clip, tmp_path, sig):
    """#2: two SIGINTs (or SIGTERMs) 30 ms apart used to interrupt the flush: rc 130 and a 48-byte overlay."""
    clip, paths = long_clip
    out = tmp_path / "out"
    proc = subprocess.Popen([*RTVOS, "segment", str(paths.video), "--mask", str(paths.first_mask), "--out",
                             str(out), "--size", str(S), "--model", "rpmnet_r18", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(sig)
    time.sleep(0.03)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, (proc.returncode, stderr[-800:])
    assert "stopped:" in stdout and "Traceback" not in stderr
    pngs = len(list(out.glob("*.png")))
    done = int(stdout.split("stopped: ")[1].split()[0])
    assert 20 <= done <= pngs < clip.num_frames
    assert _decoded(out / "overlay.mp4") == done  # every frame the summary counts is in a playable file
