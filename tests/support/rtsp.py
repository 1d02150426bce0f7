"""Start/stop the loopback GStreamer RTSP server (``rtsp_server.py``) from tests and benchmarks.

The server runs under Debian's ``/usr/bin/python3`` (python3-gi +
gir1.2-gst-rtsp-server-1.0); the project interpreter has no ``gi``. Tests
call :func:`require_gst_rtsp` first: it skips when the server cannot run,
except under ``RTVOS_SYSTEM_TESTS=1`` (set by CI) where a missing server is
a failure, so CI cannot go green by skipping the streaming tests.

Example::

    server = start_rtsp_server(tmp_path, clip=mp4, stamp=True)
    try:
        with open_source(server.url) as src: ...
        server.restart()          # same port, new process
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "SERVER_SCRIPT",
    "SYSTEM_PYTHON",
    "RtspServer",
    "gst_rtsp_status",
    "require_gst_rtsp",
    "start_rtsp_server",
]

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('appsrc', 'x264enc', 'rtph264pay', 'videotestsrc', 'decodebin', 'videoconvert', "
    "'videoscale', 'qtdemux', 'h264parse') if Gst.ElementFactory.find(e) is None]; "
    "missing += [] if any(Gst.ElementFactory.find(e) for e in ('openh264dec', 'avdec_h264')) "
    "else ['openh264dec|avdec_h264']; "
    "print(' '.join(missing))"
)
_status: str | None = None


def gst_rtsp_status() -> str:
    """'' when the RTSP test server can run here, else why not (cached)."""
    global _status
    if _status is None:
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            _status = f"{SYSTEM_PYTHON} not found (Debian python3 with python3-gi is needed for the RTSP test server)"
        else:
            try:
                r = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                r = None
            if r is None:
                _status = "probing GStreamer under /usr/bin/python3 timed out"
            elif r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["?"])[-1]
                _status = (
                    "GStreamer RTSP server unavailable under /usr/bin/python3 "
                    f"(apt install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-*): {last}"
                )
            elif r.stdout.strip():
                _status = f"GStreamer elements missing: {r.stdout.strip()} (install gstreamer1.0-plugins-base/good/bad/ugly)"
            else:
                _status = ""
    return _status


def require_gst_rtsp() -> None:
    """Skip the calling test when the server cannot run; fail instead under RTVOS_SYSTEM_TESTS=1."""
    import pytest

    reason = gst_rtsp_status()
    if not reason:
        return
    if os.environ.get("RTVOS_SYSTEM_TESTS") == "1":
        pytest.fail(f"RTVOS_SYSTEM_TESTS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class RtspServer:
    """One server process; ``url`` stays valid across :meth:`restart` (same port)."""

    def __init__(self, argv_tail: list[str], log_path: Path, port: int, user: str | None, password: str | None,
                 start_timeout: float) -> None:
        self._tail = argv_tail
        self.log_path = log_path
        self.port = port
        self.user, self.password = user, password
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    # -------------------------------------------------------------- urls
    @property
    def url(self) -> str:
        """rtsp://[user:password@]127.0.0.1:PORT/clip (credentials included when the server has them)."""
        auth = ""
        if self.user is not None:
            auth = f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}@"
        return f"rtsp://{auth}127.0.0.1:{self.port}/clip"

    @property
    def plain_url(self) -> str:
        """The URL without credentials."""
        return f"rtsp://127.0.0.1:{self.port}/clip"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---------------------------------------------------------- process
    def start(self) -> RtspServer:
        """Start the process (on ``port``, or a free one the first time) and wait for READY."""
        if self.running:
            raise RuntimeError("RTSP server already running")
        deadline = time.monotonic() + self.start_timeout
        last_error = ""
        while True:
            line, last_error = self._launch(deadline)
            if line is not None:
                break
            # A port just freed by a killed server may need a moment; retry until the deadline.
            if time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server did not start: {last_error}")
            time.sleep(0.2)
        url = line.split()[1]
        self.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        self.starts += 1
        return self

    def _launch(self, deadline: float) -> tuple[str | None, str]:
        argv = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port), *self._tail]
        with open(self.log_path, "a") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}: port {self.port}\n")
            log.flush()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                                    start_new_session=True)
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
                    line = proc.stdout.readline()
                    if line.startswith("READY "):
                        self.proc = proc
                        return line.strip(), ""
                    if line == "":  # exited before READY
                        break
                elif proc.poll() is not None:
                    break
        finally:
            sel.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return None, f"exit code {proc.returncode}; log {self.log_path}: {' | '.join(tail)}"

    def kill(self) -> None:
        """SIGKILL, like a crashed server: clients see their TCP connection die."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; safe to call twice."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open (a dead server that never closes the connection)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, *, down_s: float = 0.0) -> RtspServer:
        """Kill the process, stay down ``down_s`` seconds, start again on the same port."""
        self.kill()
        if down_s > 0:
            time.sleep(down_s)
        return self.start()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RtspServer({self.plain_url}, running={self.running})"


def start_rtsp_server(
    tmp_path: str | os.PathLike[str],
    *,
    clip: str | os.PathLike[str] | None = None,
    stamp: bool = False,
    fps: int = 25,
    size: tuple[int, int] | None = None,
    user: str | None = None,
    password: str | None = None,
    port: int | None = None,
    start_timeout: float = 30.0,
) -> RtspServer:
    """Start ``rtsp://127.0.0.1:PORT/clip`` and return once it accepts clients.

    ``clip``: a video file to loop (default: videotestsrc ball pattern).
    ``size``: (width, height) to scale to; None keeps the clip's own size
    (320×240 for the pattern). ``stamp``: paint ``time.time()`` into every
    frame (decode with ``rtvos.data.stamp.decode_stamp``). ``user``/``password``
    turn on RTSP basic auth; ``.url`` then carries them. ``port`` None picks a
    free port; :meth:`RtspServer.restart` reuses it. The server's stderr goes
    to ``tmp_path/rtsp_server.log``. Call :func:`require_gst_rtsp` first in tests.
    """
    reason = gst_rtsp_status()
    if reason:
        raise RuntimeError(reason)
    tail = ["--fps", str(int(fps))]
    if clip is not None:
        tail += ["--clip", os.fspath(clip)]
    if size is not None:
        tail += ["--size", f"{int(size[0])}x{int(size[1])}"]
    if stamp:
        tail.append("--stamp")
    if (user is None) != (password is None):
        raise ValueError("user and password go together")
    if user is not None:
        tail += ["--user", user, "--password", password or ""]
    log = Path(tmp_path) / "rtsp_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = RtspServer(tail, log, int(port or 0), user, password, start_timeout)
    return server.start()
