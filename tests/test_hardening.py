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
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

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


# ---------------------------------------------------------------------- 3-6, 12: output paths checked up front


@pytest.fixture
def no_model(monkeypatch):
    """The refusals below must come before the model loads (seconds, and a GPU maybe)."""
    import rtvos

    def no_load(*a, **k):
        raise AssertionError("model loaded before the outputs were checked")

    monkeypatch.setattr(rtvos, "load_model", no_load)


def _main_err(capsys, argv: list[str]) -> tuple[int, str]:
    from rtvos.apps.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def test_jsonl_or_mask_video_onto_the_input_is_refused(clip, tmp_path, capsys, no_model):
    """#3: `--jsonl in/victim.mp4` replaced the input video with JSON lines (rc 0)."""
    _, paths = clip
    victim = tmp_path / "in" / "victim.mp4"
    victim.parent.mkdir()
    victim.write_bytes(paths.video.read_bytes())
    before = victim.read_bytes()
    for flag, target in (("--jsonl", victim), ("--mask-video", victim), ("--jsonl", tmp_path / "in" / ".." / "in" /
                                                                           "victim.mp4"), ("--jsonl", paths.first_mask)):
        rc, err = _main_err(capsys, ["segment", str(victim), "--mask", str(paths.first_mask), "--out",
                                     str(tmp_path / "o"), flag, str(target), "--quiet"])
        assert rc == 2 and "refusing to overwrite" in err and flag in err and "Traceback" not in err, err
    assert victim.read_bytes() == before and not (tmp_path / "o").exists()
    # --out onto the input frame folder would overwrite its frames with masks
    frames = tmp_path / "frames"
    frames.mkdir()
    c, _ = clip
    for i in range(3):
        Image.fromarray(c.frames[i]).save(frames / f"{i:05d}.png")
    rc, err = _main_err(capsys, ["segment", str(frames), "--mask", str(paths.first_mask), "--out", str(frames),
                                 "--exist-ok", "--quiet"])
    assert rc == 2 and "would overwrite the input" in err, err


def test_mask_video_onto_the_overlay_is_refused(clip, tmp_path, capsys, no_model):
    """#4: `--mask-video o/overlay.mp4` silently replaced the overlay (rc 0, both listed)."""
    _, paths = clip
    out = tmp_path / "o"
    for flag, target in (("--mask-video", out / "overlay.mp4"), ("--jsonl", out / "overlay.mp4"),
                         ("--jsonl", out / "00003.png"), ("--mask-video", out / "sub" / ".." / "overlay.mp4")):
        rc, err = _main_err(capsys, ["segment", str(paths.video), "--mask", str(paths.first_mask), "--out", str(out),
                                     flag, str(target), "--quiet"])
        assert rc == 2 and flag in err and ("same file as the overlay" in err or "mask PNGs" in err), err
    rc, err = _main_err(capsys, ["segment", str(paths.video), "--mask", str(paths.first_mask), "--out", str(out),
                                 "--jsonl", str(tmp_path / "log.mp4"), "--mask-video", str(tmp_path / "log.mp4"),
                                 "--quiet"])
    assert rc == 2 and "--mask-video" in err and "same file as --jsonl" in err, err
    assert not out.exists()


def test_exist_ok_removes_only_what_rtvos_wrote_and_only_after_every_check(clip, tmp_path, capsys):
    """#5: --exist-ok deleted 2024.png and 12345.png (not rtvos's), and with a bad --mask-video it deleted the
    previous run's PNGs before failing."""
    from rtvos.apps.cli import main

    c, paths = clip
    out = tmp_path / "o"
    base = ["segment", str(paths.video), "--mask", str(paths.first_mask), "--out", str(out), "--model", "rpmnet_r18",
            "--size", str(S), "--quiet"]
    assert main(base) == 0
    previous = sorted(p.name for p in out.glob("*.png"))
    assert len(previous) == c.num_frames
    for name in ("2024.png", "12345.png"):
        Image.fromarray(c.frames[0]).save(out / name)
    for bad in (str(tmp_path / "mv.txt"), str(tmp_path / "mv.gif"), str(tmp_path)):  # refused: nothing removed
        rc, err = _main_err(capsys, [*base, "--exist-ok", "--mask-video", bad])
        assert rc == 2 and "--mask-video" in err, err
        assert sorted(p.name for p in out.glob("0*.png")) == previous
    assert main([*base, "--exist-ok", "--max-frames", "3"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png", "12345.png",
                                                         "2024.png"]


@pytest.mark.parametrize("target, expect", [("mv.txt", "'.txt'"), ("mv.gif", "'.gif'"), ("folder/", "is a folder")])
def test_mask_video_format_is_checked_before_the_model_loads(clip, tmp_path, capsys, no_model, target, expect):
    """#6: `--mask-video o_mv.txt` failed after the model loaded with "Could not determine output format",
    naming neither the option nor the path."""
    _, paths = clip
    (tmp_path / "folder").mkdir()
    rc, err = _main_err(capsys, ["segment", str(paths.video), "--mask", str(paths.first_mask), "--out",
                                 str(tmp_path / "o"), "--mask-video", str(tmp_path / target), "--quiet"])
    assert rc == 2 and err.startswith("rtvos segment: error: --mask-video") and expect in err, err
    assert str(tmp_path / target).rstrip("/") in err and not (tmp_path / "o").exists()


def test_out_on_a_device_says_device(clip, capsys, no_model):
    """#12: `--out /dev/full` was "is a file, not a folder"."""
    _, paths = clip
    rc, err = _main_err(capsys, ["segment", str(paths.video), "--mask", str(paths.first_mask), "--out", "/dev/full",
                                 "--quiet"])
    assert rc == 2 and "/dev/full is a device, not a folder" in err, err


def test_debug_keeps_the_exit_status(clip, tmp_path, capsys, no_model):
    """#12: --debug turned exit 2 (bad input) into 1 (an uncaught exception)."""
    _, paths = clip
    r = subprocess.run([*RTVOS, "segment", str(paths.video), "--box", "1,2,x", "--debug"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].startswith(
        "rtvos segment: error: box '1,2,x'"), r.stderr[-500:]


def test_too_many_boxes_are_refused_before_the_model_loads(clip, tmp_path, capsys, no_model):
    """#12: 300 --box values were refused only after the model loaded, leaving an empty folder."""
    _, paths = clip
    boxes = [a for i in range(300) for a in ("--box", f"{i % 100},{i % 80},{i % 100 + 4},{i % 80 + 4}")]
    rc, err = _main_err(capsys, ["segment", str(paths.video), *boxes, "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "at most 254" in err and "300" in err, err
    assert not (tmp_path / "o").exists()


def test_box_errors_echo_what_was_typed(clip, tmp_path, capsys, no_model):
    """#12: box errors echoed the converted x,y,w,h (` 100, 80 ,150,130` came back as `100,80,50,50`, and
    rtvos.track's (x1, y1, x2, y2) came back as x,y,w,h)."""
    import rtvos
    from rtvos.io import InputError

    c, paths = clip
    rc, err = _main_err(capsys, ["segment", str(paths.video), "--box", " 100, 80 ,150,130", "--out",
                                 str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "box 100, 80 ,150,130 reaches (150,130)" in err, err
    with pytest.raises(InputError, match=r"box \(30, 20, 10, 40\) must have a positive width"):
        rtvos.track(c.frames, boxes=[(30, 20, 10, 40)])


# ------------------------------------------------------------------------------- 7, 11: the library's misuse


@pytest.fixture(scope="module")
def seg():
    import warnings

    import rtvos
    from rtvos.models import RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return rtvos.Segmenter(rtvos.load_model("rpmnet_r18"), size=S, backend="eager")


def test_one_segmenter_in_two_concurrent_runs_is_refused(clip, seg):
    """#7: two rtvos.track runs sharing one Segmenter in two threads gave wrong masks silently (19 of 20 frames
    differed). The second run now raises a RuntimeError naming the problem; after the first ends, it works."""
    import threading

    import rtvos

    c, _ = clip
    first = rtvos.track(c.frames, mask=c.masks[0], model=seg)
    it = iter(first)
    next(it)  # the first run is now stepping seg
    errors: list[BaseException] = []

    def second() -> None:
        try:
            for _ in rtvos.track(c.frames, mask=c.masks[0], model=seg):
                pass
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    t = threading.Thread(target=second)
    t.start()
    t.join(timeout=120)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert "already stepping another stream" in str(errors[0]) and "one Segmenter per" in str(errors[0])
    rest = [r.mask for r in it]  # the first run is unharmed
    assert len(rest) == c.num_frames - 1
    alone = [r.mask for r in rtvos.track(c.frames, mask=c.masks[0], model=seg)][1:]  # released: usable again
    assert all(np.array_equal(a, b) for a, b in zip(rest, alone))


def test_track_takes_a_single_box_and_refuses_nan(clip, seg):
    """#11: boxes=(60, 80, 120, 160) raised TypeError, boxes=[(nan, 0, 10, 10)] a ValueError; both are user input."""
    import rtvos
    from rtvos.io import InputError

    c, _ = clip
    one = [r.mask for r in rtvos.track(c.frames[:2], boxes=(20, 16, 80, 66), model=seg)]
    listed = [r.mask for r in rtvos.track(c.frames[:2], boxes=[(20, 16, 80, 66)], model=seg)]
    as_array = [r.mask for r in rtvos.track(c.frames[:2], boxes=np.array([20.2, 16.0, 79.8, 66.0]), model=seg)]
    assert all(np.array_equal(a, b) and np.array_equal(a, d) for a, b, d in zip(one, listed, as_array))
    assert set(np.unique(one[0])) == {0, 1}
    for bad, match in (([(float("nan"), 0, 10, 10)], r"box \(nan, 0, 10, 10\) has a coordinate that is not a finite"),
                       ([(1, 2, 3)], r"box must be \(x1, y1, x2, y2\)"), ("10,10,20", "is not 'x1,y1,x2,y2'"),
                       (b"10,10,20,20", "boxes must be a list"),
                       ([("a", 1, 2, 3)], "numbers")):
        with pytest.raises(InputError, match=match):
            rtvos.track(c.frames, boxes=bad, model=seg)
    with pytest.raises(InputError, match="not a finite"):
        rtvos.track(c.frames, points=[(float("inf"), 3)], model=seg)


# ------------------------------------------------------------------------------------ 9: a full disk on --jsonl


def test_full_disk_on_the_jsonl_names_it_and_flags_it(long_clip, tmpfs, tmp_path):
    """#9: a full disk under --jsonl gave an error line naming no file, and the kept line listed the cut log as if
    it were complete."""
    _, paths = long_clip
    small = tmpfs("8k")
    log = small / "log.jsonl"
    r = subprocess.run([*RTVOS, "segment", str(paths.video), "--mask", str(paths.first_mask), "--out",
                        str(tmp_path / "o"), "--jsonl", str(log), "--model", "rpmnet_r18", "--size", str(S),
                        "--quiet"], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "no space left on the device" in lines[-1] and str(log) in lines[-1], r.stderr
    assert f"log:     {log} is INCOMPLETE" in r.stderr, r.stderr
    complete = [json.loads(x) for x in log.read_text().splitlines() if x.endswith("}")]
    assert f"{len(complete)} complete line(s)" in r.stderr or f"{len(complete) - 1} complete line(s)" in r.stderr


# ------------------------------------------------------------------------------- 10: OpenCV's own log lines


def test_missing_webcam_prints_only_rtvos_line():
    """#10: `rtvos webcam 7` printed OpenCV's "[ERROR:0@0.114] ... Camera index out of range" first."""
    r = subprocess.run([*RTVOS, "webcam", "7", "--box", "1,1,4,4", "--out", "/tmp/never-written.mp4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]], r.stderr
    assert r.stderr.startswith("rtvos webcam: error: cannot open webcam /dev/video7"), r.stderr


# ------------------------------------------------------------------- 8: live MP4 fragments by wall-clock time

_SLOW_FRAG_WRITER = """
import sys, time, numpy as np
from rtvos.io.writer import VideoWriter
w = VideoWriter(sys.argv[1], fps=25, fragmented=True)  # nominal 25 fps, delivered at about 5 fps
for i in range(100000):
    f = np.full((96, 128, 3), (i * 7) % 255, np.uint8); f[:, : (i % 128)] = 30
    w.write(f)
    print(i + 1, flush=True)
    time.sleep(0.2)
"""


def test_sigkilled_slow_live_mp4_loses_at_most_one_second(tmp_path):
    """#8: a 25 fps-nominal stream delivered at 4 fps cut a fragment every 25 frames (6 s), so SIGKILL lost
    ~3 s, not "at most the last second": fragments are now cut by wall-clock time too."""
    from rtvos.io.writer import FRAGMENT_S

    path = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_FRAG_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    written = int(proc.stdout.readline())
    t0 = time.monotonic()
    while written < 22:  # about 4.4 s of frames
        written = int(proc.stdout.readline())
    elapsed = time.monotonic() - t0
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rate = (written - 1) / elapsed  # frames per wall-clock second, as delivered
    decoded = _decoded(path)
    assert written - rate * FRAGMENT_S - 2 <= decoded <= written, (written, decoded, rate)


# ------------------------------------------------------------------------- also expected: rotated phone videos


def _write_rotated(path: Path, frames: list[np.ndarray], degrees: int) -> None:
    """An MP4 of landscape ``frames`` with a display-matrix rotation, as a phone records portrait video."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "12"}
        s.set_display_rotation(degrees)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


@pytest.mark.parametrize("degrees", [-90, 90, 180])
def test_rotated_video_is_decoded_upright(clip, tmp_path, capsys, degrees):
    """A phone video's display-matrix rotation was ignored: a mask drawn on the upright frame was refused
    (240x320 vs 320x240) and the overlay played sideways. The rotation is now applied on decode."""
    from rtvos.apps.cli import main
    from rtvos.io import open_source, write_mask

    c, _ = clip
    path = tmp_path / "phone.mp4"
    _write_rotated(path, list(c.frames), degrees)
    k = (degrees // 90) % 4  # counter-clockwise quarter turns, what a player shows
    upright = [np.rot90(f, k) for f in c.frames]
    src = open_source(path)
    assert src.size == upright[0].shape[:2]
    got = [f.image for f in src]
    assert len(got) == c.num_frames and got[0].shape == upright[0].shape
    assert np.abs(got[3].astype(int) - upright[3].astype(int)).mean() < 4  # the same picture, turned
    mask = tmp_path / "upright.png"
    write_mask(mask, np.ascontiguousarray(np.rot90(c.masks[0], k)))
    out = tmp_path / "o"
    assert main(["segment", str(path), "--mask", str(mask), "--out", str(out), "--model", "rpmnet_r18", "--size",
                 str(S), "--quiet"]) == 0, capsys.readouterr().err
    with av.open(str(out / "overlay.mp4")) as o:
        st = o.streams.video[0]
        assert (st.height, st.width) == upright[0].shape[:2]


# ------------------------------------------------------------------------ also expected: variable frame rate


def test_variable_frame_rate_timestamps_are_kept_in_the_overlay(clip, tmp_path, capsys):
    """The overlay was re-timed to a constant rate (a VFR phone clip played at 12.17 fps, out of sync); it now
    keeps the source's timestamps."""
    from rtvos.apps.cli import main

    c, paths = clip
    gaps_ms = [40, 40, 200, 40, 10, 10, 500, 40, 33, 33, 100]
    pts_ms = np.concatenate([[0], np.cumsum(gaps_ms)])[: c.num_frames]
    src = tmp_path / "vfr.mp4"
    with av.open(str(src), "w") as o:
        s = o.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = c.frames[0].shape[1], c.frames[0].shape[0], "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for f, t in zip(c.frames, pts_ms):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = int(t), s.codec_context.time_base
            for p in s.encode(vf):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)

    def times(path: Path) -> list[float]:
        with av.open(str(path)) as i:
            return sorted(float(f.pts * f.time_base) for f in i.decode(video=0))

    assert np.allclose(times(src), pts_ms / 1000, atol=1e-3)  # the source really is VFR
    out = tmp_path / "o"
    assert main(["segment", str(src), "--mask", str(paths.first_mask), "--out", str(out), "--model", "rpmnet_r18",
                 "--size", str(S), "--quiet"]) == 0, capsys.readouterr().err
    got = times(out / "overlay.mp4")
    assert len(got) == len(pts_ms) and np.allclose(np.array(got) - got[0], pts_ms / 1000, atol=2e-3), got


# --------------------------------------------------------- also expected: SIGKILL on a file source keeps the MP4


def test_sigkilled_file_run_keeps_a_playable_overlay(long_clip, tmp_path):
    """SIGKILL during `rtvos segment FILE` left a 48-byte overlay (a plain MP4 writes its index at the end); the
    overlay is now a fragmented MP4 for files too, losing at most a fragment (1 s) plus the encoder's look-ahead."""
    from rtvos.io.writer import FRAGMENT_S

    clip, paths = long_clip
    out = tmp_path / "out"
    proc = subprocess.Popen([*RTVOS, "segment", str(paths.video), "--mask", str(paths.first_mask), "--out",
                             str(out), "--size", str(S), "--model", "rpmnet_r18", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 80 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    pngs = len(list(out.glob("*.png")))
    lookahead = 16  # veryfast: rc-lookahead 10 + 3 B-frames, with margin
    decoded = _decoded(out / "overlay.mp4")
    assert pngs - 25 * FRAGMENT_S - lookahead - 2 <= decoded <= pngs, (pngs, decoded)


# ------------------------------------------------------------- also expected: a truncated .ts says it ended early


def test_truncated_transport_stream_is_reported(tmp_path, capsys):
    """A cut .ts ended "done: N frames" with rc 0 (TS declares no frame count and FFmpeg ends it silently); it
    now reports the truncation like a cut MP4: the frames before it are kept, then one line, rc 2."""
    from rtvos.apps.cli import main
    from rtvos.io import write_mask

    c = make_synthetic_clip(num_frames=60, height=96, width=128, num_objects=1, seed=3)
    full = tmp_path / "full.ts"
    with av.open(str(full), "w") as o:
        s = o.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        for f in c.frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    data = full.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2 + 77])  # not a whole number of 188-byte packets
    write_mask(tmp_path / "m.png", c.masks[0])
    argv = ["--mask", str(tmp_path / "m.png"), "--model", "rpmnet_r18", "--size", str(S), "--quiet"]
    assert main(["segment", str(full), "--out", str(tmp_path / "full"), *argv]) == 0  # the whole file: fine
    capsys.readouterr()
    out = tmp_path / "o"
    rc = main(["segment", str(cut), "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and str(cut) in err[-1] and "truncated" in err[-1], err
    kept = len(list(out.glob("*.png")))
    assert 0 < kept < c.num_frames and f"{kept} frame(s) processed before stopping" in "\n".join(err)


def test_second_signal_during_the_flush_skips_the_queued_frames(clip, seg, tmp_path):
    """#2 in the library: real SIGINTs to this process, the first while the model loop runs, the second while the
    teardown drains a slow sink's queue: the queued frames are skipped, every sink is still closed, the MP4 holds
    exactly the frames the summary counts, and no KeyboardInterrupt escapes the flush."""
    import os
    import threading

    import rtvos
    from rtvos.io.sinks import SegmentedFrame, Sink, VideoSink

    class Slow(Sink):
        name = "slow"

        def __init__(self) -> None:
            self.written, self.closed = 0, False

        def write(self, item: SegmentedFrame) -> None:
            time.sleep(0.15)
            self.written += 1

        def close(self) -> None:
            self.closed = True

    c, _ = clip
    frames = [c.frames[i % c.num_frames] for i in range(200)]
    slow, video = Slow(), VideoSink(tmp_path / "o.mp4")
    tracking = rtvos.track(frames, mask=c.masks[0], model=seg, sinks=[video, slow])

    def send() -> None:
        deadline = time.monotonic() + 60
        while slow.written < 3 and time.monotonic() < deadline:  # the writer's queue is full by now
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # lands in the model loop: the run stops and flushes ...
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # ... while the slow sink still drains ~8 queued frames (1.2 s)

    signals = threading.Thread(target=send)
    try:
        signals.start()
        n = sum(1 for _ in tracking)
        signals.join()
    except KeyboardInterrupt:
        signals.join()
        pytest.fail("a second Ctrl-C escaped the pipeline's flush")
    s = tracking.summary()
    assert s.interrupted and "skipped" in (s.stop_reason or ""), s.stop_reason
    assert tracking.pipeline.skipped > 0 and slow.closed and slow.written == s.frames < n
    assert _decoded(tmp_path / "o.mp4") == s.frames
