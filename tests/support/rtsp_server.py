"""A real RTSP server on loopback for tests and the latency benchmark.

Run with Debian's ``/usr/bin/python3`` (python3-gi + gir1.2-gst-rtsp-server-1.0;
the project's own interpreter has no ``gi``)::

    /usr/bin/python3 tests/support/rtsp_server.py PORT [--clip X.mp4] [--stamp] [--fps 25]
        [--size 320x240] [--user U --password P]

Serves ``rtsp://127.0.0.1:PORT/clip`` (PORT 0 picks a free one) and prints
``READY rtsp://127.0.0.1:PORT/clip`` once listening. Frames come from the
clip (decoded once to I420 at start and looped, so the stream never ends)
or from GStreamer's videotestsrc ball pattern, and are pushed through a live
``appsrc`` at ``--fps`` in real time, then ``x264enc tune=zerolatency`` →
``rtph264pay``, a keyframe every half second so a (re)connecting client
starts quickly. Pushing ourselves (instead of ``filesrc ! qtdemux``) is what
lets ``--stamp`` write the wall-clock ``time.time()`` of the moment a frame
enters the encoder into its top rows (``rtvos/data/stamp.py``), which a
client decodes to measure glass-to-glass latency, and keeps the stream
live and endless for kill/restart tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstRtspServer, GstVideo  # noqa: E402

_STAMP_PY = Path(__file__).resolve().parents[2] / "rtvos" / "data" / "stamp.py"


def _load_stamp():  # type: ignore[no-untyped-def]
    # Load the file directly: importing the rtvos package would pull in torch/numpy.
    spec = importlib.util.spec_from_file_location("_rtvos_stamp", _STAMP_PY)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _log(msg: str) -> None:
    print(f"rtsp_server: {msg}", file=sys.stderr, flush=True)


def decode_frames(clip: str | None, size: tuple[int, int] | None, count: int) -> tuple[list[bytes], GstVideo.VideoInfo]:
    """Decode the clip (or ``count`` pattern frames) to I420 buffers held in memory."""
    scale = f",width={size[0]},height={size[1]}" if size else ""
    if clip:
        loc = clip.replace("\\", "\\\\").replace('"', '\\"')
        head = f'filesrc location="{loc}" ! decodebin ! videoconvert ! videoscale'
    else:
        w, h = size or (320, 240)
        scale = f",width={w},height={h}"
        head = f"videotestsrc pattern=ball num-buffers={count} ! videoconvert"
    pipe = Gst.parse_launch(f"{head} ! video/x-raw,format=I420{scale} ! appsink name=sink sync=false")
    sink = pipe.get_by_name("sink")
    pipe.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    info = None
    while True:
        sample = sink.emit("pull-sample")  # None at EOS or error
        if sample is None:
            break
        if info is None:
            info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        buf = sample.get_buffer()
        frames.append(buf.extract_dup(0, buf.get_size()))
    bus = pipe.get_bus()
    err = bus.pop_filtered(Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if err is not None and not frames:
        gerr, _ = err.parse_error()
        raise SystemExit(f"rtsp_server: cannot decode {clip or 'videotestsrc'}: {gerr.message}")
    if not frames or info is None:
        raise SystemExit(f"rtsp_server: no frames decoded from {clip or 'videotestsrc'}")
    return frames, info


class Pusher(threading.Thread):
    """Feeds every prepared media's appsrc one frame per 1/fps of wall clock."""

    def __init__(self, frames: list[bytes], info: GstVideo.VideoInfo, fps: int, stamp) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.frames, self.info, self.fps, self.stamp = frames, info, fps, stamp
        self.lock = threading.Lock()
        self.sources: set = set()
        self.pushed = 0

    def add(self, appsrc) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.sources.add(appsrc)

    def remove(self, appsrc) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.sources.discard(appsrc)

    def _stamped(self, data: bytes, t: float) -> bytes:
        info = self.info
        w, h = info.width, info.height
        bw, bh = self.stamp.stamp_layout(w)
        bits = self.stamp.stamp_bits(t)
        cols, rows = self.stamp.STAMP_COLUMNS, self.stamp.STAMP_ROWS
        out = bytearray(data)
        ys, yo = info.stride[0], info.offset[0]
        for r in range(rows):
            line = b"".join((b"\xeb" if bits[r * cols + c] else b"\x10") * bw for c in range(cols))
            line += b"\x10" * (w - len(line))
            for y in range(r * bh, min((r + 1) * bh, h)):
                out[yo + y * ys : yo + y * ys + w] = line
        # Neutral chroma under the band so the blocks are pure black/white.
        cw = (w + 1) // 2
        for plane in (1, 2):
            cs, co = info.stride[plane], info.offset[plane]
            for y in range((rows * bh + 1) // 2):
                out[co + y * cs : co + y * cs + cw] = b"\x80" * cw
        return bytes(out)

    def run(self) -> None:
        period = 1.0 / self.fps
        duration = int(Gst.SECOND // self.fps)
        nxt = time.monotonic()
        k = 0
        while True:
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                nxt = time.monotonic()  # fell far behind (suspended?): do not burst
            nxt += period
            with self.lock:
                sources = list(self.sources)
            if not sources:
                continue
            data = self.frames[k % len(self.frames)]
            k += 1
            if self.stamp is not None:
                data = self._stamped(data, time.time())
            for src in sources:
                buf = Gst.Buffer.new_wrapped(data)
                buf.duration = duration
                if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    self.remove(src)
            self.pushed += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", type=int, help="TCP port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--clip", help="video file to serve (looped); default: videotestsrc ball pattern")
    p.add_argument("--stamp", action="store_true", help="paint time.time() into every frame (rtvos.data.stamp)")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", help="WxH to scale to (default: the clip's own size, 320x240 for the pattern)")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--path", default="/clip", help="mount point (default /clip)")
    p.add_argument("--bitrate", type=int, default=0, help="x264 kbit/s (default scales with size and fps)")
    args = p.parse_args(argv)
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    size = None
    if args.size:
        w, _, h = args.size.lower().partition("x")
        size = (int(w), int(h))

    Gst.init(None)
    stamp = _load_stamp() if args.stamp else None
    frames, info = decode_frames(args.clip, size, count=2 * args.fps)
    w, h = info.width, info.height
    if stamp is not None:
        stamp.stamp_layout(w)  # fail now, not in the pusher thread, if the frame is too narrow
    kbps = args.bitrate or max(1000, w * h * args.fps // 5000)
    _log(f"{len(frames)} frames {w}x{h} looped at {args.fps} fps, {kbps} kbit/s, stamp={'on' if stamp else 'off'}")

    pusher = Pusher(frames, info, args.fps, stamp)
    caps = f"video/x-raw,format=I420,width={w},height={h},framerate={args.fps}/1"
    launch = (
        f'( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2 leaky-type=downstream caps="{caps}" '
        f"! x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max={max(1, args.fps // 2)} bitrate={kbps} "
        f"! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)

    def on_configure(_factory, media) -> None:  # type: ignore[no-untyped-def]
        appsrc = media.get_element().get_by_name("src")
        pusher.add(appsrc)
        media.connect("unprepared", lambda _m: pusher.remove(appsrc))
        _log("client media prepared")

    factory.connect("media-configure", on_configure)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(args.path, factory)
    try:
        server.attach(None)
    except GLib.Error as err:
        raise SystemExit(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}: {err.message}") from None
    port = server.get_bound_port()
    pusher.start()

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{port}{args.path}", flush=True)
    loop.run()
    _log(f"stopping after {pusher.pushed} frames")
    os._exit(0)  # skip GStreamer teardown: the tests only need the port freed


if __name__ == "__main__":
    sys.exit(main())
