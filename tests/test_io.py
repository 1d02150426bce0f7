"""Tests for rtvos.io: frame sources, MP4 writing, DAVIS masks, overlays."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from rtvos.io import (
    DAVIS_PALETTE,
    Frame,
    InputError,
    VideoWriter,
    object_boundaries,
    open_source,
    overlay,
    read_mask,
    write_mask,
)

H, W, T = 64, 96, 12


def _frames(n: int = T, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    """Smooth, moving content (compresses like real video, unlike white noise)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), (w + n * 2, h))
    return [np.ascontiguousarray(base[:, 2 * i : 2 * i + w].astype(np.uint8)) for i in range(n)]


def _count_frames(path: Path) -> tuple[int, tuple[int, int], Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, (s.codec_context.height, s.codec_context.width), s.average_rate


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    frames = _frames()
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, 24, size=(H, W)) as w:
        for f in frames:
            w.write(f)
    return path, frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


# ----------------------------------------------------------------- video files


def test_read_video_file(mp4: tuple[Path, list[np.ndarray]]) -> None:
    path, ref = mp4
    with open_source(path) as src:
        assert src.size == (H, W)
        assert src.fps == pytest.approx(24.0)
        assert src.num_frames == T
        assert src.name == "clip"
        frames = list(src)
    assert [f.source_index for f in frames] == list(range(T))
    for f, r in zip(frames, ref):
        assert isinstance(f, Frame)
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous
        assert _psnr(f.image, r) > 30  # lossy H.264, but the same picture
    pts = [f.pts_s for f in frames]
    assert pts[0] == pytest.approx(0.0) and all(b > a for a, b in zip(pts, pts[1:]))
    assert pts[-1] == pytest.approx((T - 1) / 24)


def test_video_source_can_be_iterated_twice(mp4: tuple[Path, list[np.ndarray]]) -> None:
    src = open_source(str(mp4[0]), fps=10)
    assert src.fps == 10
    first = [f.image for f in src]
    second = [f.image for f in src]
    src.close()
    assert len(first) == len(second) == T
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_writer_odd_size_fractional_fps_and_lazy_size(tmp_path: Path) -> None:
    frames = _frames(n=5, h=33, w=47)
    path = tmp_path / "sub" / "odd.mp4"
    with VideoWriter(path, 30000 / 1001) as w:  # size taken from the first frame
        for f in frames:
            w.write(f)
        assert w.rate == Fraction(30000, 1001)
        with pytest.raises(ValueError):
            w.write(np.zeros((10, 10, 3), np.uint8))
    n, size, rate = _count_frames(path)
    assert n == 5 and size == (34, 48)  # padded to even by edge replication
    assert float(rate) == pytest.approx(29.97, abs=1e-2)
    with open_source(path) as src:
        img = next(iter(src)).image
    assert _psnr(img[:33, :47], frames[0]) > 23  # tiny + saturated: chroma subsampling bites
    with pytest.raises(ValueError):
        w.write(frames[0])  # closed


# --------------------------------------------------------------- image folders


def test_read_frame_folder_png_exact_and_sorted(tmp_path: Path) -> None:
    frames = _frames(n=11)
    for i, f in enumerate(frames):  # unpadded names: natural sort must order 2 < 10
        Image.fromarray(f).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(tmp_path, fps=12.5) as src:
        assert src.size == (H, W) and src.num_frames == 11 and src.fps == 12.5
        got = list(src)
    assert len(got) == 11
    for i, f in enumerate(got):
        assert f.source_index == i and f.pts_s == pytest.approx(i / 12.5)
        assert f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        np.testing.assert_array_equal(f.image, frames[i])  # RGB order, lossless


def test_read_frame_folder_jpg(tmp_path: Path) -> None:
    for i, f in enumerate(_frames(n=4)):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.jpg", quality=95)
    with open_source(tmp_path) as src:
        assert src.fps == 24.0
        got = [f.image for f in src]
    assert len(got) == 4 and got[0].shape == (H, W, 3)


# ---------------------------------------------------------------- input errors


def test_missing_path(tmp_path: Path) -> None:
    p = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match="no such file or folder") as e:
        open_source(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    p = tmp_path / "fake.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError) as e:
        open_source(p)
    assert str(p) in str(e.value)


def test_empty_folder_and_folder_without_images(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images") as e:
        open_source(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        open_source(tmp_path)


def test_folder_with_differing_sizes(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "00000.png")
    Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(tmp_path / "00001.png")
    src = open_source(tmp_path)
    it = iter(src)
    assert next(it).source_index == 0
    with pytest.raises(InputError, match="00001.png"):
        next(it)


def test_folder_with_corrupt_image(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "00000.png")
    (tmp_path / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="00001.jpg"):
        list(open_source(tmp_path))


def test_unreachable_stream_is_an_input_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: the connection is refused at once, no DNS involved
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match=f"rtsp://127.0.0.1:{port}/1"):
        open_source(f"rtsp://127.0.0.1:{port}/1", open_timeout_s=3)


@pytest.mark.parametrize("mid_packet", [True, False], ids=["mid-packet", "packet-boundary"])
def test_truncated_mp4_yields_frames_then_errors(
    mp4: tuple[Path, list[np.ndarray]], tmp_path: Path, mid_packet: bool
) -> None:
    path, _ = mp4
    full = [f for f in open_source(path)]
    # Cut inside (FFmpeg flags a short, corrupt packet) or exactly before (the
    # demuxer just stops: only the frame count reveals it) the packet stored
    # halfway through the file, independent of how well frames compressed.
    with av.open(str(path)) as c:
        pkts = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pos, size = sorted(pkts)[len(pkts) // 2]
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(path.read_bytes()[: pos + (size // 2 if mid_packet else 0)])
    got: list[Frame] = []
    with pytest.raises(InputError) as e:
        with open_source(bad) as src:
            assert src.num_frames == T  # header (moov, faststart) survived the cut
            for f in src:
                got.append(f)
    msg = str(e.value)
    assert str(bad) in msg and f"frame {len(got)}" in msg and "\n" not in msg
    assert 0 < len(got) < T, msg
    # Frames before the damage are intact and correctly numbered/timestamped.
    for f in got:
        np.testing.assert_array_equal(f.image, full[f.source_index].image)
        assert f.pts_s == full[f.source_index].pts_s


def test_mp4_cut_inside_header(mp4: tuple[Path, list[np.ndarray]], tmp_path: Path) -> None:
    bad = tmp_path / "head.mp4"
    bad.write_bytes(mp4[0].read_bytes()[:200])
    with pytest.raises(InputError) as e:
        list(open_source(bad))
    assert str(bad) in str(e.value)


# ----------------------------------------------------------------------- masks


def test_davis_palette() -> None:
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    assert DAVIS_PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]  # VOC "void" colour
    assert len({tuple(c) for c in DAVIS_PALETTE.tolist()}) == 256
    assert not DAVIS_PALETTE.flags.writeable


def test_palette_mask_roundtrip(tmp_path: Path) -> None:
    ids = np.zeros((5, 7), np.uint8)
    ids[1:3, 2:5] = 1
    ids[4, :] = 7
    ids[0, 6] = 255
    pal = DAVIS_PALETTE.copy()
    pal[7] = (1, 2, 3)
    p = tmp_path / "m" / "00000.png"
    write_mask(p, ids, pal)
    with Image.open(p) as im:
        assert im.mode == "P"
    got, got_pal = read_mask(p)
    np.testing.assert_array_equal(got, ids)
    np.testing.assert_array_equal(got_pal, pal)
    write_mask(tmp_path / "d.png", ids)  # default palette
    np.testing.assert_array_equal(read_mask(tmp_path / "d.png")[1], DAVIS_PALETTE)


def test_grayscale_masks(tmp_path: Path) -> None:
    g = np.zeros((4, 4), np.uint8)
    g[1:3, 1:3] = 255
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    ids, pal = read_mask(tmp_path / "g.png")
    assert ids.dtype == np.uint8 and set(np.unique(ids)) == {0, 1}
    np.testing.assert_array_equal(ids, (g > 0).astype(np.uint8))
    np.testing.assert_array_equal(pal, DAVIS_PALETTE)
    g[0, 0], g[3, 3] = 40, 100  # levels map to 1..K ascending
    Image.fromarray(g, mode="L").save(tmp_path / "g3.png")
    ids, _ = read_mask(tmp_path / "g3.png")
    assert ids[0, 0] == 1 and ids[3, 3] == 2 and ids[1, 1] == 3 and ids[0, 1] == 0


def test_rgb_masks(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = DAVIS_PALETTE[2]
    rgb[1, 1] = DAVIS_PALETTE[5]
    Image.fromarray(rgb).save(tmp_path / "davis_rgb.png")
    ids, _ = read_mask(tmp_path / "davis_rgb.png")
    assert ids[0, 0] == 2 and ids[1, 1] == 5 and ids.sum() == 7
    rgb[2, 2] = (255, 255, 255)  # not a DAVIS colour: all colours renumbered 1..K
    rgb[3, 3] = (10, 200, 30)
    Image.fromarray(rgb).save(tmp_path / "any_rgb.png")
    ids, pal = read_mask(tmp_path / "any_rgb.png")
    assert set(np.unique(ids)) == {0, 1, 2, 3, 4} and ids[0, 1] == 0
    np.testing.assert_array_equal(pal[ids], rgb)  # palette reproduces the drawing


def test_mask_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.png"):
        read_mask(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="text.png"):
        read_mask(tmp_path / "text.png")
    many = np.zeros((20, 20, 3), np.uint8)
    many[..., 0] = np.arange(400).reshape(20, 20) % 256
    many[..., 1] = np.arange(400).reshape(20, 20) // 256 + 1
    Image.fromarray(many).save(tmp_path / "many.png")
    with pytest.raises(InputError, match="many.png"):
        read_mask(tmp_path / "many.png")
    with pytest.raises(ValueError):
        write_mask(tmp_path / "bad.png", np.full((2, 2), 300))


# --------------------------------------------------------------------- overlay


def test_overlay_exact_pixels() -> None:
    frame = np.full((4, 5, 3), 100, np.uint8)
    ids = np.zeros((4, 5), np.uint8)
    ids[1:3, 1:4] = 1
    ids[0, 0] = 2
    out = overlay(frame, ids, DAVIS_PALETTE, alpha=0.5, contour=False)
    # (1-a)*100 + a*128 = 114, (1-a)*100 + a*0 = 50; background untouched.
    assert out[1, 1].tolist() == [114, 50, 50]
    assert out[0, 0].tolist() == [50, 114, 50]
    assert out[3, 4].tolist() == [100, 100, 100]
    assert (out[ids == 0] == 100).all()
    assert np.array_equal(frame, np.full((4, 5, 3), 100, np.uint8))  # input not modified

    big = np.zeros((5, 5), np.uint8)
    big[1:4, 1:4] = 3
    f5 = np.full((5, 5, 3), 100, np.uint8)
    c = overlay(f5, big, DAVIS_PALETTE, alpha=0.25, contour=True)
    assert c[2, 2].tolist() == [round(0.75 * 100 + 0.25 * 128)] * 2 + [75]  # interior blended
    assert c[1, 1].tolist() == [128, 128, 0]  # boundary: pure palette colour
    assert c[0, 0].tolist() == [100, 100, 100]


def test_overlay_boundaries_and_out_buffer() -> None:
    ids = np.zeros((6, 6), np.uint8)
    ids[:, 3:] = 1  # touches the image border: no outline along it
    ids[2:4, 0:3] = 2  # touches object 1: both sides outlined
    edge = object_boundaries(ids)
    expected = np.zeros((6, 6), bool)
    expected[:, 3] = True  # left edge of object 1 (borders 0 or 2)
    expected[2:4, 0:3] = True  # object 2 is 2 rows thick: all boundary
    np.testing.assert_array_equal(edge, expected)

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    ref = overlay(frame, ids)
    buf = np.empty_like(frame)
    assert overlay(frame, ids, out=buf) is buf
    np.testing.assert_array_equal(buf, ref)
    inplace = frame.copy()
    assert overlay(inplace, ids, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, ref)
    with pytest.raises(ValueError):
        overlay(frame, ids[:5])


def test_overlay_matches_numpy_reference() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    ids = rng.integers(0, 4, (48, 80)).astype(np.uint8)
    ids[:20] = 0
    got = overlay(frame, ids, DAVIS_PALETTE, alpha=0.5, contour=False)
    col = DAVIS_PALETTE[ids].astype(np.float64)
    ref = np.where((ids > 0)[..., None], np.rint(0.5 * frame + 0.5 * col), frame)
    np.testing.assert_array_equal(got, ref.astype(np.uint8))
    empty = np.zeros_like(ids)
    np.testing.assert_array_equal(overlay(frame, empty), frame)


@pytest.mark.parametrize(("h", "w", "px"), [(480, 854, 2), (480, 640, 2), (720, 1280, 3), (1080, 1920, 4), (96, 128, 1)])
def test_overlay_contour_scales_with_the_frame(h: int, w: int, px: int) -> None:
    """Issue #20.6: the outline is >= 2 px at 480p (1 px per 240 px of the short side), in the pure display colour."""
    from rtvos.io.overlay import DISPLAY_PALETTE, contour_width

    assert contour_width((h, w, 3)) == px
    frame = np.full((h, w, 3), 100, np.uint8)
    ids = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = h // 4, 3 * h // 4, w // 4, 3 * w // 4
    ids[y0:y1, x0:x1] = 1
    out = overlay(frame, ids)
    pure = (out == DISPLAY_PALETTE[1]).all(axis=2)
    row, col = pure[h // 2], pure[:, w // 2]
    assert row[x0:x0 + px].all() and not row[x0 + px] and not row[x0 - 1], np.flatnonzero(row)[:8]  # left edge
    assert row[x1 - px:x1].all() and not row[x1 - px - 1] and not row[x1]  # right edge
    assert col[y0:y0 + px].all() and not col[y0 + px]  # top edge
    blended = np.rint(0.5 * 100 + 0.5 * DISPLAY_PALETTE[1].astype(float)).astype(np.uint8)
    assert out[h // 2, w // 2].tolist() == blended.tolist()  # the inside is blended, not outlined


def test_display_colours_are_distinct_and_saturated_and_pngs_keep_their_palette(tmp_path: Path) -> None:
    """Screens use DISPLAY_COLOURS (far apart, saturated); the PNG masks keep the input palette."""
    import cv2

    from rtvos.io.overlay import DISPLAY_COLOURS, DISPLAY_PALETTE

    hsv = cv2.cvtColor(np.array([DISPLAY_COLOURS], np.uint8), cv2.COLOR_RGB2HSV)[0].astype(int)
    assert (hsv[:, 1] >= 200).all() and (hsv[:, 2] >= 200).all(), hsv  # saturated and bright
    rgb = np.array(DISPLAY_COLOURS, int)
    gaps = [np.abs(a - b).max() for i, a in enumerate(rgb) for b in rgb[i + 1:]]
    assert min(gaps) >= 60, min(gaps)  # no two colours alike
    assert DISPLAY_PALETTE[0].tolist() == [0, 0, 0] and DISPLAY_PALETTE[11].tolist() == list(DISPLAY_COLOURS[0])

    pal = DAVIS_PALETTE.copy()
    pal[1] = (10, 20, 30)
    ids = np.zeros((8, 8), np.uint8)
    ids[2:6, 2:6] = 1
    write_mask(tmp_path / "m.png", ids, pal)
    back, back_pal = read_mask(tmp_path / "m.png")
    assert np.array_equal(back, ids) and back_pal[1].tolist() == [10, 20, 30]


def test_fragmented_writer_for_live_streams(tmp_path: Path) -> None:
    """Fragmented MP4 (live sinks): decodable, every frame present; a fragment per keyframe, no moov index."""
    from rtvos.io import VideoWriter

    path = tmp_path / "live.mp4"
    with VideoWriter(path, fps=25, fragmented=True) as w:
        for i in range(30):
            w.write(np.full((120, 160, 3), i * 8, np.uint8))
    frames = [f.image for f in open_source(path)]
    assert len(frames) == 30
    assert abs(int(frames[-1].mean()) - 29 * 8) <= 3
    assert b"moof" in path.read_bytes()  # really fragmented (a faststart file has no moof box)


_FRAG_WRITER = """
import sys, time, numpy as np
from rtvos.io.writer import VideoWriter
w = VideoWriter(sys.argv[1], fps=25, fragmented=True)
for i in range(100000):
    f = np.full((96, 128, 3), (i * 7) % 255, np.uint8); f[:, : (i % 128)] = 30
    w.write(f)
    print(i + 1, flush=True)
    time.sleep(0.005)
"""


@pytest.mark.parametrize("kill_at", [40, 90, 160])
def test_sigkilled_live_mp4_loses_at_most_one_fragment(tmp_path, kill_at):
    """Issue #13.2: a real writer process killed with SIGKILL leaves a playable MP4 holding every frame but
    at most the last FRAGMENT_S seconds (25 frames at 25 fps)."""
    import signal
    import subprocess
    import sys

    import av

    from rtvos.io.writer import FRAGMENT_S

    path = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _FRAG_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    written = 0
    while written < kill_at:
        written = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with av.open(str(path)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert written - 25 * FRAGMENT_S - 2 <= decoded <= written + 2, (written, decoded)


# ------------------------------------------------------------------ module layout and the FrameSource protocol

_IO_DIR = Path(__file__).resolve().parents[1] / "rtvos" / "io"
_IO_MODULES = sorted(p.stem for p in _IO_DIR.glob("*.py") if p.stem != "__init__")

# What each module may import from rtvos.io (exactly, for the source stack; at most, for the rest).
_IO_LAYERS = {
    "base": set(),
    "video": {"base"},
    "live": {"base"},
    "writer": {"base"},
    "arrays": {"base"},
    "source": {"arrays", "base", "live", "video"},
}

# Imports one module with bare stand-ins for the `rtvos` and `rtvos.io` packages, so no __init__ runs and
# only what the module itself imports is loaded; prints the rtvos modules that ended up loaded.
_ISOLATED_IMPORT = """
import importlib, json, sys, types
from pathlib import Path
io_dir = Path(sys.argv[2])
for name, path in (("rtvos", io_dir.parent), ("rtvos.io", io_dir)):
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(path)]
    sys.modules[name] = pkg
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.startswith("rtvos."))))
"""


@pytest.mark.parametrize("module", _IO_MODULES)
def test_io_module_imports_on_its_own(module: str) -> None:
    """Each rtvos.io module imports alone in a fresh interpreter (no import cycle, nothing it forgot to import),
    and the source stack is layered: base <- arrays, video, live, writer <- source."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _ISOLATED_IMPORT, f"rtvos.io.{module}", str(_IO_DIR)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # rtvos.common is the library's leaf module of shared facts (box format, mask video modes), importing nothing
    loaded = {m.removeprefix("rtvos.io.") for m in json.loads(run.stdout.splitlines()[-1])} - {"rtvos.io", module,
                                                                                               "rtvos.common"}
    assert not {m for m in loaded if m.startswith("rtvos.")}, loaded  # rtvos.io needs nothing else outside itself
    if module in _IO_LAYERS:
        assert loaded == _IO_LAYERS[module], loaded
    else:
        assert not loaded & {"live", "video", "source"}, loaded  # masks/overlay/prompt/sinks read no sources


def test_import_live_alone_in_a_fresh_interpreter() -> None:
    import subprocess
    import sys

    code = "import rtvos.io.live as m; from rtvos.io import FrameSource; assert FrameSource in m.LiveSource.__mro__"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_public_names_and_old_paths() -> None:
    import rtvos.io as io
    from rtvos.io import base, live, source, video, writer

    assert io.InputError is base.InputError and io.Frame is base.Frame and io.FrameSource is base.FrameSource
    assert io.open_source is source.open_source and io.VideoWriter is writer.VideoWriter
    assert io.ImageFolderSource is video.ImageFolderSource and io.VideoFileSource is video.VideoFileSource
    assert io.LiveSource is live.LiveSource
    assert video.InputError is base.InputError and video.IMAGE_EXTENSIONS is base.IMAGE_EXTENSIONS  # old paths
    for name in io.__all__:
        assert getattr(io, name) is not None, name
    assert base.natural_key("f10.png") > base.natural_key("f2.png")
    assert base.check_fps("25", "x") == 25.0
    with pytest.raises(InputError, match="frame rate for clip"):
        base.check_fps(0, "clip")


def _concrete_source_classes() -> set[type]:
    import importlib
    import inspect

    from rtvos.io import FrameSourceBase, LiveSource

    bases = {FrameSourceBase, LiveSource}  # shared machinery; they open nothing themselves
    found: set[type] = set()
    for name in _IO_MODULES:
        module = importlib.import_module(f"rtvos.io.{name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, FrameSourceBase) and cls.__module__.startswith("rtvos.io.") and cls not in bases:
                found.add(cls)
    return found


def _check_protocol(src: object) -> None:
    from rtvos.io import FrameSource

    assert isinstance(src, FrameSource), type(src)
    assert isinstance(src.name, str) and src.name
    assert isinstance(src.fps, float) and src.fps > 0
    assert isinstance(src.size, tuple) and len(src.size) == 2 and all(isinstance(v, int) for v in src.size)
    assert isinstance(src.is_live, bool)
    assert src.num_frames is None or isinstance(src.num_frames, int)
    stats = src.stats()
    assert isinstance(stats["dropped"], int) and isinstance(stats["reconnects"], int)


def test_file_sources_satisfy_the_frame_source_protocol(tmp_path: Path) -> None:
    """Every concrete source class of rtvos.io is covered here or in test_live.py, and files satisfy the
    runtime-checkable FrameSource protocol with zero drop/reconnect counters."""
    from rtvos.io import ArraySource, ImageFolderSource, NetworkSource, VideoFileSource, WebcamSource
    from rtvos.io.pace import PacedSource

    assert _concrete_source_classes() == {ImageFolderSource, VideoFileSource, NetworkSource, WebcamSource,
                                          PacedSource, ArraySource}
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_frames(3)):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 24) as w:
        for f in _frames(3):
            w.write(f)
    for src in (ImageFolderSource(folder), VideoFileSource(clip)):
        with src:
            _check_protocol(src)
            assert not src.is_live and src.size == (H, W) and src.num_frames == 3
            assert src.stats() == {"frames": 0, "dropped": 0, "reconnects": 0}
            assert len(list(src)) == 3 and src.stats()["frames"] == 3
    # The pacing wrapper (test_pace.py times it) reads its file's metadata and counters through.
    with PacedSource(ImageFolderSource(folder)) as paced:
        _check_protocol(paced)
        assert not paced.is_live and paced.size == (H, W) and paced.num_frames == 3
        assert len(list(paced)) == 3
    # Frames given as arrays (rtvos.track's ndarray / iterable sources).
    with ArraySource(np.stack(_frames(3)), fps=24) as arrays:
        _check_protocol(arrays)
        assert not arrays.is_live and arrays.size == (H, W) and arrays.num_frames == 3
        assert len(list(arrays)) == 3


def test_frame_source_protocol_is_structural_and_gives_defaults() -> None:
    from collections.abc import Iterator

    from rtvos.io import FrameSource

    class Plain:  # no rtvos base class at all
        name, fps, size, is_live, num_frames = "plain", 25.0, (2, 3), False, 0

        def __iter__(self) -> Iterator[Frame]:
            return iter(())

        def stats(self) -> dict[str, int]:
            return {"dropped": 0, "reconnects": 0}

        def close(self) -> None: ...

        def __enter__(self) -> Plain:
            return self

        def __exit__(self, *exc: object) -> None: ...

    class NoStats:
        name, fps, size, is_live, num_frames = "x", 25.0, (2, 3), False, 0

        def __iter__(self) -> Iterator[Frame]:
            return iter(())

        def close(self) -> None: ...

    class Inherits(FrameSource):  # subclassing the protocol still gives the old base-class defaults
        def __init__(self) -> None:
            self.name, self.fps, self.size, self.num_frames = "sub", 30.0, (4, 4), None

        def __iter__(self) -> Iterator[Frame]:
            yield Frame(source_index=0, image=np.zeros((4, 4, 3), np.uint8))

    assert isinstance(Plain(), FrameSource) and not isinstance(NoStats(), FrameSource)
    with Inherits() as src:
        _check_protocol(src)
        assert src.is_live is False and src.stats()["dropped"] == 0 and len(list(src)) == 1
