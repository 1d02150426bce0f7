"""Live sources against real parts: a GStreamer RTSP server on loopback and PyAV/OpenCV decoders.

The RTSP tests run Debian's GStreamer RTSP server (``tests/support/rtsp_server.py``
under /usr/bin/python3). They skip when it is missing, except under
``RTVOS_SYSTEM_TESTS=1`` (CI), where they fail instead.

This machine has no camera (no /dev/video*), so the webcam tests swap only the
device: PyAV's ``av.open(..., format="v4l2")`` is redirected to FFmpeg's lavfi
``testsrc2`` paced by the ``realtime`` filter (an endless, real-time raw video
input, like a V4L2 camera), and for the fallback ``cv2.VideoCapture(0)`` is
redirected to a real OpenCV capture of a generated MP4. Everything above the
device (WebcamSource, the reader thread, newest-frame hand-over, stats) is the
real code.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from support.rtsp import RtspServer, require_gst_rtsp, start_rtsp_server

import rtvos.io.live as live
from rtvos.data.stamp import decode_stamp, encode_stamp
from rtvos.io import Frame, InputError, VideoWriter, open_source, redact_text, redact_url

USER, PASSWORD = "alice", "s3cr3t-pw"


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text.strip() == text and text
    return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _take(src: Any, n: int) -> list[Frame]:
    out = []
    for f in src:
        out.append(f)
        if len(out) >= n:
            break
    return out


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One password-protected stamping server for the read-only tests of this module."""
    require_gst_rtsp()
    server = start_rtsp_server(tmp_path_factory.mktemp("rtsp"), stamp=True, user=USER, password=PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    """A server of its own, for tests that kill it."""
    require_gst_rtsp()
    srv = start_rtsp_server(tmp_path, user=USER, password=PASSWORD)
    yield srv
    srv.stop()


# ------------------------------------------------------------------ redaction and schemes


def test_redact_url() -> None:
    assert redact_url("rtsp://bob:pw@cam.local:554/live?x=1") == "rtsp://***@cam.local:554/live?x=1"
    assert redact_url("rtsp://bob@cam/live") == "rtsp://***@cam/live"
    assert redact_url("http://cam/a.mjpg?user=bob&password=pw&res=hd") == "http://cam/a.mjpg?user=bob&password=***&res=hd"
    assert redact_url("rtsp://cam/live") == "rtsp://cam/live"
    text = redact_text("Server error for 'rtsp://bob:pw@h/x' and http://u:p@q/?token=abc")
    assert "pw" not in text and "u:p" not in text and "abc" not in text and "rtsp://***@h/x" in text


@pytest.mark.parametrize("url", ["ftp://bob:pw@host/clip.mp4", "udp://239.0.0.1:1234", "srt://x:9000"])
def test_unknown_scheme_is_a_one_line_error(url: str) -> None:
    with pytest.raises(InputError) as info:
        open_source(url)
    msg = _one_line(info.value)
    scheme = url.split(":", 1)[0]
    assert f"unsupported URL scheme '{scheme}'" in msg and "expected one of: rtsp, rtsps, rtmp, http, https" in msg
    assert "pw" not in msg


def test_refused_connection_names_redacted_url(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()  # nothing listens there
    url = f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{port}/clip"
    with caplog.at_level(logging.DEBUG, logger="rtvos"), pytest.raises(InputError) as info:
        open_source(url, open_timeout_s=5)
    msg = _one_line(info.value)
    assert f"rtsp://***@127.0.0.1:{port}/clip" in msg and "refused" in msg.lower()
    assert PASSWORD not in msg and USER not in msg
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("bad", [{"policy": "newest"}, {"queue_size": 0}, {"transport": "sctp"}])
def test_bad_live_options(bad: dict[str, Any]) -> None:
    # Rejected before any connection is tried (the port has no server).
    with pytest.raises(InputError) as info:
        open_source(f"rtsp://u:pw@127.0.0.1:{_free_port()}/x", **bad)
    assert "pw" not in _one_line(info.value) and str(next(iter(bad.values()))) in str(info.value)


# ------------------------------------------------------------------ RTSP


def test_rtsp_stream_reads_frames(shared_server: RtspServer) -> None:
    before = time.time()
    with open_source(shared_server.url) as src:
        assert src.is_live and src.num_frames is None
        assert src.size == (240, 320) and src.fps == pytest.approx(25, abs=1)
        assert src.name == "clip" and PASSWORD not in repr(src)
        frames = _take(src, 12)
        stats = src.stats()
    idx = [f.source_index for f in frames]
    assert idx == sorted(set(idx)) and idx[0] == 0
    pts = [f.pts_s for f in frames]
    assert pts[0] == 0.0 and all(b > a for a, b in zip(pts, pts[1:]))
    for f in frames:
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert before <= f.captured_s <= time.time()
        stamp = decode_stamp(f.image)  # the server's clock, painted into the picture
        assert stamp is not None and before - 5 < stamp <= f.captured_s + 0.01
    # Indices skip exactly the frames the newest-frame policy dropped; more may drop after the 12th was taken.
    gaps = idx[-1] + 1 - len(idx)
    assert stats["frames"] == 12 and stats["reconnects"] == 0 and stats["dropped"] >= gaps


def test_rtsp_over_udp(shared_server: RtspServer) -> None:
    with open_source(shared_server.url, transport="udp") as src:
        frames = _take(src, 5)
    assert len(frames) == 5 and all(f.image.shape == (240, 320, 3) for f in frames)
    assert sum(decode_stamp(f.image) is not None for f in frames) >= 3  # UDP may lose a packet


def test_wrong_password_is_redacted(shared_server: RtspServer) -> None:
    url = shared_server.url.replace(PASSWORD, "not-the-password")
    with pytest.raises(InputError) as info:
        open_source(url)
    msg = _one_line(info.value)
    assert "not-the-password" not in msg and "***@127.0.0.1" in msg and "401" in msg


def test_drop_policy_drops_for_a_slow_consumer_and_block_does_not(shared_server: RtspServer) -> None:
    results = {}
    for policy in ("drop", "block"):
        with open_source(shared_server.url, policy=policy) as src:
            frames = []
            for f in src:
                frames.append(f)
                time.sleep(0.15)  # ~4 frame periods at 25 fps
                if len(frames) >= 8:
                    break
            results[policy] = ([f.source_index for f in frames], src.stats())
    drop_idx, drop_stats = results["drop"]
    block_idx, block_stats = results["block"]
    assert drop_stats["dropped"] > 0
    assert drop_idx[-1] - drop_idx[0] > len(drop_idx) - 1  # gaps: the newest frame was handed over
    assert block_stats["dropped"] == 0
    assert block_idx == list(range(block_idx[0], block_idx[0] + len(block_idx)))


def test_reconnects_after_server_restart(server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    frames: list[Frame] = []
    with caplog.at_level(logging.INFO, logger="rtvos"), open_source(server.url) as src:
        for f in src:
            frames.append(f)
            if len(frames) == 10:
                server.restart(down_s=0.5)  # SIGKILL, port closed for 0.5 s, new process on the same port
            if src.stats()["reconnects"] >= 1 and len(frames) >= 30:
                break
        stats = src.stats()
    assert stats["reconnects"] >= 1 and stats["reconnect_attempts"] >= 1
    idx = [f.source_index for f in frames]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    pts = [f.pts_s for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    # The gap while the server was down shows in the wall-clock stamps.
    gaps = np.diff([f.captured_s for f in frames])
    assert gaps.max() >= 0.5
    lines = [r.getMessage() for r in caplog.records if r.name == "rtvos"]
    assert any("lost rtsp://***@127.0.0.1" in line for line in lines)
    assert any("reconnected to rtsp://***@127.0.0.1" in line for line in lines)
    assert PASSWORD not in caplog.text and f"{USER}:" not in caplog.text


def test_hung_server_is_noticed_by_the_read_timeout(server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    """A server that stops answering but keeps its socket open: the socket timeout ends the wait."""
    frames: list[Frame] = []
    with caplog.at_level(logging.INFO, logger="rtvos"), \
            open_source(server.url, read_timeout_s=1.0, open_timeout_s=1.0) as src:
        for f in src:
            frames.append(f)
            if len(frames) == 5:
                server.pause()
                deadline = time.monotonic() + 60
                while src.stats()["reconnect_attempts"] < 1:  # wait until the reader noticed the silence
                    assert time.monotonic() < deadline, "a hung server went unnoticed"
                    time.sleep(0.05)
                server.resume()
            if src.stats()["reconnects"] >= 1 and len(frames) >= 15:
                break
    assert [f.source_index for f in frames] == sorted({f.source_index for f in frames})
    assert any("no answer within 1 s" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text


def test_gives_up_after_max_reconnect_s(server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rtvos"), open_source(server.url, max_reconnect_s=1.0) as src:
        got = _take(src, 3)
        server.kill()  # and never comes back
        with pytest.raises(InputError) as info:
            for f in src:
                got.append(f)
    msg = _one_line(info.value)
    assert "gave up reconnecting" in msg and "***@127.0.0.1" in msg and PASSWORD not in msg
    attempts = [r for r in caplog.records if "reconnect" in r.getMessage()]
    assert len(attempts) >= 2  # one line per attempt
    assert PASSWORD not in caplog.text


def test_reconnect_false_ends_iteration(server: RtspServer) -> None:
    with open_source(server.url, reconnect=False) as src:
        got = _take(src, 3)
        server.kill()
        try:
            got += list(src)  # ends instead of waiting for the server forever...
        except InputError as err:  # ...or names the (redacted) stream that broke
            assert "lost stream rtsp://***@127.0.0.1" in _one_line(err) and PASSWORD not in str(err)
    assert len(got) >= 3 and src.stats()["reconnects"] == 0 and src.stats()["reconnect_attempts"] == 0


def test_close_stops_reader_thread(shared_server: RtspServer) -> None:
    for policy in ("drop", "block"):
        src = open_source(shared_server.url, policy=policy)
        _take(src, 2)
        time.sleep(0.2)  # block: the reader is now waiting for queue space
        src.close()
        assert not src._thread.is_alive()
        assert list(src) == []
        src.close()  # twice is fine


def test_close_wakes_a_waiting_consumer(shared_server: RtspServer) -> None:
    src = open_source(shared_server.url, policy="block")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(sum(1 for _ in src)))
    t.start()
    time.sleep(0.5)
    src.close()
    t.join(10)
    assert not t.is_alive() and out and out[0] > 0


# ------------------------------------------------------------------ webcam


@pytest.fixture
def fake_v4l2(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Route av.open(<dev>, format="v4l2") to an endless real-time lavfi test source."""
    real_open = av.open
    calls: list[tuple[str, str | None]] = []

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        fmt = kwargs.get("format")
        calls.append((str(file), fmt))
        if fmt == "v4l2":
            if str(file) != "/dev/video0":
                raise av.error.FileNotFoundError(2, "No such file or directory", str(file))
            return real_open("testsrc2=size=160x120:rate=30,realtime", format="lavfi")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(live.av, "open", fake_open)
    return calls


@pytest.mark.parametrize("device", [0, "0", "/dev/video0"])
def test_webcam_through_pyav_v4l2(fake_v4l2: list[tuple[str, str | None]], device: Any) -> None:
    with open_source(device) as src:
        assert isinstance(src, live.WebcamSource) and src.is_live
        assert src.backend == "pyav-v4l2" and src.name == "webcam0"
        assert src.size == (120, 160) and src.fps == pytest.approx(30)
        frames = _take(src, 5)
        time.sleep(0.5)  # the camera keeps running while nobody reads: only the newest frame is kept
        later = _take(src, 1)[0]
        stats = src.stats()
    assert fake_v4l2[0] == ("/dev/video0", "v4l2")
    assert [f.source_index for f in frames] == sorted({f.source_index for f in frames})
    assert later.source_index > frames[-1].source_index + 1 and stats["dropped"] > 0
    assert stats["frames"] == 6 and stats["backend"] == "pyav-v4l2"
    assert all(f.image.shape == (120, 160, 3) and f.captured_s is not None for f in frames)


def test_webcam_falls_back_to_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyAV's v4l2 open fails (as it does here: there is no /dev/video0) → OpenCV VideoCapture is used."""
    clip = tmp_path / "cam.mp4"
    ref = [np.full((64, 96, 3), 20 + 10 * i, np.uint8) for i in range(10)]
    with VideoWriter(clip, 30, size=(64, 96)) as w:
        for f in ref:
            w.write(f)
    real_open, real_capture = av.open, cv2.VideoCapture
    opened: list[Any] = []

    def no_v4l2(file: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("format") == "v4l2":
            raise av.error.FileNotFoundError(2, "No such file or directory", str(file))
        return real_open(file, *args, **kwargs)

    def capture(target: Any, *args: Any) -> Any:
        opened.append(target)
        return real_capture(str(clip)) if target == 0 else real_capture(target, *args)

    monkeypatch.setattr(live.av, "open", no_v4l2)
    monkeypatch.setattr(live.cv2, "VideoCapture", capture)
    with open_source(0, policy="block", reconnect=False) as src:
        assert src.backend == "opencv" and src.size == (64, 96) and src.fps == pytest.approx(30)
        frames = list(src)
    assert opened == [0]
    assert [f.source_index for f in frames] == list(range(10))
    means = [float(f.image.mean()) for f in frames]
    assert means == pytest.approx([float(r.mean()) for r in ref], abs=3)


def test_live_sources_satisfy_the_frame_source_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """WebcamSource and NetworkSource are runtime FrameSources (the pipeline reads them by plain attribute);
    both streams are FFmpeg's real-time lavfi test source, so no camera or RTSP server is needed."""
    from rtvos.io import FrameSource

    real_open = av.open

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("format") == "v4l2" or str(file).startswith("rtsp://"):
            return real_open("testsrc2=size=160x120:rate=30,realtime", format="lavfi")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(live.av, "open", fake_open)
    for src in (live.WebcamSource(0), live.NetworkSource(f"rtsp://{USER}:{PASSWORD}@cam.invalid/live")):
        with src:
            assert isinstance(src, FrameSource), type(src)
            assert src.is_live is True and src.num_frames is None and src.size == (120, 160)
            assert isinstance(src.name, str) and src.name and isinstance(src.fps, float) and src.fps > 0
            assert len(_take(src, 2)) == 2
            stats = src.stats()
            assert isinstance(stats["dropped"], int) and isinstance(stats["reconnects"], int)
            assert PASSWORD not in repr(src)


@pytest.mark.skipif(os.path.exists("/dev/video0"), reason="a real camera is attached")
def test_missing_camera_is_a_one_line_error() -> None:
    with pytest.raises(InputError) as info:
        open_source(0, open_timeout_s=3)
    msg = _one_line(info.value)
    assert "/dev/video0" in msg and "PyAV v4l2" in msg and "OpenCV" in msg


def test_negative_webcam_index() -> None:
    with pytest.raises(InputError, match="webcam index"):
        open_source(-1)


# ------------------------------------------------------------------ files and stamps


def test_file_frames_carry_capture_time_and_stats(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    with VideoWriter(path, 24, size=(32, 48)) as w:
        for i in range(5):
            w.write(np.full((32, 48, 3), 40 * i, np.uint8))
    before = time.time()
    with open_source(path) as src:
        assert not src.is_live
        frames = list(src)
        assert src.stats() == {"frames": 5, "dropped": 0, "reconnects": 0}
    assert all(f.captured_s is not None and before <= f.captured_s <= time.time() for f in frames)


def test_stamp_round_trip_through_h264(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    times = [1_700_000_000.123 + 0.04 * i for i in range(6)]
    images = [encode_stamp(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), t) for t in times]
    assert [decode_stamp(im) for im in images] == pytest.approx(times, abs=1e-3)
    path = tmp_path / "stamped.mp4"
    with VideoWriter(path, 25, size=(120, 160), crf=35) as w:
        for im in images:
            w.write(im)
    with open_source(path) as src:
        decoded = [decode_stamp(f.image) for f in src]
    assert decoded == pytest.approx(times, abs=1e-3)
    assert decode_stamp(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)) is None
    assert decode_stamp(np.zeros((120, 160, 3), np.uint8)) is None


@pytest.mark.parametrize("secret", ["sec/ret", "se?c#ret", "p@ss/w?rd"])
def test_password_with_unencoded_delimiters_is_never_printed(secret: str) -> None:
    """Issue #13.3: a real `rtvos stream` process on a closed port: the one-line error hides the password."""
    import subprocess
    import sys

    url = f"rtsp://user:{secret}@127.0.0.1:9/x"
    assert secret not in redact_url(url) and secret not in redact_text(f"error at {url}: refused")
    proc = subprocess.run([sys.executable, "-m", "rtvos", "stream", url, "--box", "1,1,4,4", "--max-frames", "1"],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "127.0.0.1" in out
    for piece in {secret, secret.split("/")[0], secret.split("?")[0]} - {""}:
        assert f"user:{piece}" not in out and f":{secret}" not in out, out
