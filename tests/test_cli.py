import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from rtvos.apps.cli import main
from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
from rtvos.io import read_mask


def _count_frames(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    clip = make_synthetic_clip(num_frames=8, height=96, width=128, num_objects=2, seed=1)
    return clip, write_synthetic_clip(clip, tmp_path_factory.mktemp("synth"))


@pytest.mark.parametrize("kind", ["video", "frames"])
def test_segment_end_to_end(synth, tmp_path, kind, capsys):
    clip, paths = synth
    src = paths.video if kind == "video" else paths.frames_dir
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--mask", str(paths.first_mask), "--out", str(out), "--size", "64", "--quiet"])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == clip.num_frames
    first, pal = read_mask(pngs[0])
    ref, ref_pal = read_mask(paths.first_mask)
    assert np.array_equal(first, ref) and np.array_equal(pal, ref_pal)
    assert _count_frames(out / "overlay.mp4") == clip.num_frames
    assert "RANDOM" not in capsys.readouterr().out  # the warning goes to stderr


def test_segment_bad_inputs(synth, tmp_path, capsys):
    clip, paths = synth
    assert main(["segment", str(tmp_path / "nope.mp4"), "--mask", str(paths.first_mask)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "nope.mp4" in err[-1] and "Traceback" not in "".join(err)
    small = tmp_path / "small.png"
    from rtvos.io import write_mask

    write_mask(small, np.zeros((10, 10), np.uint8))
    assert main(["segment", str(paths.video), "--mask", str(small), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "10x10" in capsys.readouterr().err
    assert main(["segment", str(paths.video)]) == 2
    assert "--mask" in capsys.readouterr().err
    empty = tmp_path / "empty.png"
    write_mask(empty, np.zeros(clip.masks[0].shape, np.uint8))  # issue #13.9: no object in the first mask
    assert main(["segment", str(paths.video), "--mask", str(empty), "--out", str(tmp_path / "e"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has no object" in err and str(empty) in err and "Traceback" not in err


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "rpmnet_r18" in data["models"] and data["backends"]["eager"] == "available"
    assert data["versions"]["torch"]


def test_console_script_default_sample(tmp_path):
    """`rtvos segment` with no argument runs on the shipped sample clip (README's first command)."""
    exe = shutil.which("rtvos")
    assert exe, "the `rtvos` console script is not on PATH: install the package as the README says"
    r = subprocess.run(
        [exe, "segment", "--max-frames", "6", "--size", "128", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "sample" in r.stderr
    from rtvos.models.hub import default_weights_path

    if default_weights_path() is not None:  # the shipped trained weights are used, without the random banner
        assert "NOT TRAINED" not in r.stderr
    else:
        assert "NOT TRAINED" in r.stderr
    out = Path(tmp_path, "rtvos_out", "sample")
    assert len(list(out.glob("*.png"))) == 6 and _count_frames(out / "overlay.mp4") == 6
    # Issue #20.8: run again, the demo replaces its own results (no "already holds results", exit 0) ...
    r = subprocess.run([exe, "segment", "--max-frames", "3", "--size", "128", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.png"))) == 3 and _count_frames(out / "overlay.mp4") == 3
    # ... but an output folder the user named is still protected.
    r = subprocess.run([exe, "segment", "--max-frames", "3", "--size", "128", "--quiet", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "already holds results" in r.stderr, r.stderr


def test_library_imports_no_app_training_or_optional_runtime():
    """`import rtvos` stays light and one-directional: training and apps import rtvos, never the reverse."""
    code = ("import sys, rtvos; bad = [m for m in ('rtvos.training', 'rtvos.apps', 'training', 'apps', 'onnx', 'onnxruntime', "
            "'tensorrt', 'tensorrt_rtx') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_box_and_output_fail_before_the_model_loads(synth, tmp_path, capsys, monkeypatch):
    """Issue #13.12: box bounds and output paths are checked before loading the model or making folders."""
    import rtvos

    clip, paths = synth

    def no_load(*a, **k):  # the model must not even be loaded
        raise AssertionError("model loaded before the inputs were validated")

    monkeypatch.setattr(rtvos, "load_model", no_load)
    monkeypatch.setattr(rtvos.models.hub, "load_model", no_load)  # what load_model_reporting calls
    out = tmp_path / "never"
    assert main(["segment", str(paths.video), "--box", "100,80,160,140", "--out", str(out), "--quiet"]) == 2
    assert "outside the 128x96 frame" in capsys.readouterr().err and not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["segment", str(paths.video), "--mask", str(paths.first_mask), "--out", str(blocker / "o")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# -- CLI conventions: version, logging, exit statuses, shared flags ------------------------------------------
@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["segment", "--help"], ["bench", "--help"]])
def test_version_and_help_do_not_import_torch(argv):
    """Issue #20.5: `rtvos --version` / `--help` answer in a fraction of a second (torch alone takes ~1.5 s)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "rtvos", *argv], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "rtvos.apps.cli" in imported  # the measurement sees the entry point's imports
    assert not {"torch", "torchvision", "onnxruntime"} & imported, sorted(imported & {"torch", "torchvision", "onnxruntime"})


def test_import_has_no_side_effect_and_the_cli_sets_omp_wait_policy():
    """`import rtvos` leaves the environment alone; the CLI entry point asks for sleeping OpenMP workers before
    anything imports torch (libgomp reads OMP_WAIT_POLICY once, when torch loads)."""
    code = ("import os, sys\nsys.argv = ['rtvos']\nimport rtvos, rtvos.apps.cli\n"
            "before = os.environ.get('OMP_WAIT_POLICY')\n"
            "try:\n    rtvos.apps.cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(before, os.environ.get('OMP_WAIT_POLICY'), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, want in ((None, "None PASSIVE"), ("ACTIVE", "ACTIVE ACTIVE")):  # the user's choice is kept
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env=env if given is None else {**env, "OMP_WAIT_POLICY": given})
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1] == want


def test_lazy_public_names_match_all():
    """The lazily loaded names are the public API; importing the `rtvos.track` submodule first (as the library
    itself does) still leaves `rtvos.track` the function."""
    code = "import rtvos.track, rtvos; print(callable(rtvos.track), rtvos.track.__module__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "rtvos.track"], r.stdout + r.stderr
    import rtvos

    assert set(rtvos._LAZY) | {"__version__"} == set(rtvos.__all__)
    for name in rtvos.__all__:
        assert getattr(rtvos, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rtvos.nope  # noqa: B018


def test_version(capsys):
    import rtvos

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"rtvos {rtvos.__version__}" == "rtvos 0.1.0"


def test_usage_and_bad_input_exit_2(synth, tmp_path, capsys):
    clip, paths = synth
    with pytest.raises(SystemExit) as exc:  # argparse usage error
        main(["segment", str(paths.video), "--backend", "warp-drive"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["segment", str(paths.video), "--mask", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rtvos segment: error:") and "missing.png" in err[0], err
    assert main(["segment", str(paths.video), "--box", "1,2,x", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("rtvos segment: error:") and "Traceback" not in "\n".join(err), err


def _failing_info(monkeypatch, exc: BaseException) -> None:
    from rtvos.apps import info

    def boom(args):
        raise exc

    monkeypatch.setattr(info, "run", boom)  # add_parser binds func=run when the parser is built


@pytest.mark.parametrize("exc, code", [(RuntimeError("backend exploded\nsecond line"), 1), (OSError(28, "No space left"), 1),
                                       (KeyError("surprise"), 1), (ValueError("bad value"), 2),
                                       (FileNotFoundError(2, "No such file", "/x.mp4"), 2)])
def test_exit_status_by_error_kind(monkeypatch, capsys, exc, code):
    _failing_info(monkeypatch, exc)
    assert main(["info"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rtvos info: error: "), err


def test_debug_shows_the_traceback_and_keeps_the_status(monkeypatch, capsys):
    _failing_info(monkeypatch, RuntimeError("backend exploded"))
    for argv in (["--debug", "info"], ["info", "--debug"]):  # also after the command
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1] == "rtvos info: error: backend exploded"
    _failing_info(monkeypatch, ValueError("bad value"))
    assert main(["--debug", "info"]) == 2 and "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("flags, shown", [([], False), (["-v"], True), (["info", "-v"], True), (["--log-level", "error"], False),
                                          (["-vv"], True)])
def test_verbose_configures_logging(monkeypatch, capsys, flags, shown):
    import logging

    from rtvos.apps import info

    monkeypatch.setattr(info, "run", lambda args: logging.getLogger("rtvos").info("hello from the library") or 0)
    root, lib = logging.getLogger(), logging.getLogger("rtvos")
    saved = root.handlers[:], root.level, lib.level
    try:
        argv = flags if flags[:1] == ["info"] else [*flags, "info"]
        assert main(argv) == 0
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        lib.setLevel(saved[2])
    assert ("INFO rtvos: hello from the library" in err) == shown, err


def test_exist_ok_flag_and_check_output_folder(tmp_path):
    from rtvos.apps.cli import build_parser
    from rtvos.io import InputError
    from rtvos.io.sinks import check_output_folder, remove_previous_masks

    for cmd in (["segment"], ["webcam"], ["stream", "rtsp://x/y"]):
        assert build_parser().parse_args([*cmd, "--exist-ok"]).exist_ok is True
        assert build_parser().parse_args(cmd).exist_ok is False
    check_output_folder(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("not a result")
    check_output_folder(tmp_path)  # no results yet
    for name in ("overlay.mp4", "00000.png", "00001.png", "frames.jsonl"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(InputError, match=r"already holds results \(4 files: 00000.png, 00001.png, frames.jsonl, \.\.\.\); "
                                         r"pass --exist-ok") as exc:
        check_output_folder(tmp_path)
    assert str(tmp_path) in str(exc.value)
    check_output_folder(tmp_path, exist_ok=True)  # checks only: nothing is removed until every check passed
    assert len(list(tmp_path.glob("0000*.png"))) == 2
    assert remove_previous_masks(tmp_path) == 2
    assert not list(tmp_path.glob("0000*.png")) and (tmp_path / "notes.txt").exists()


def test_device_auto_and_backend_choices_from_the_registry():
    import torch

    from rtvos.apps.cli import build_parser
    from rtvos.backends import backend_names, list_backends, resolve_device

    assert backend_names() == ["auto", *list_backends()]
    p = build_parser()
    for argv in (["segment"], ["webcam"], ["eval", "root"], ["bench"], ["train", "d", "--out", "o"], ["ablate", "c", "r"],
                 ["build-engine"]):
        assert p.parse_args(argv).device == "auto", argv
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    seg = next(a for a in p._subparsers._group_actions[0].choices["segment"]._actions if a.dest == "backend")
    assert list(seg.choices) == backend_names()
