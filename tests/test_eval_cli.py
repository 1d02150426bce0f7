"""`rtvos eval` end to end on a tiny synthetic DAVIS-layout set: files, keys, rescoring, method ranking."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtvos.apps.cli import main
from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip

GLOBAL_KEYS = {"J&F", "J", "J-recall", "J-decay", "F", "F-recall", "F-decay"}


def make_davis(root: Path, names: tuple[str, ...] = ("alpha", "beta"), frames: int = 8) -> Path:
    """Synthetic clips arranged as DAVIS: JPEGImages/480p/<seq>, Annotations/480p/<seq>, ImageSets/2017/mini.txt."""
    for i, name in enumerate(names):
        clip = make_synthetic_clip(num_frames=frames, height=64, width=80, seed=10 + i, speed=3.0,
                                   num_objects=1 + i, background_speed=0.0)
        paths = write_synthetic_clip(clip, root / "_tmp" / name, as_video=False, frame_ext="png")
        for src, kind in ((paths.frames_dir, "JPEGImages"), (paths.masks_dir, "Annotations")):
            dst = root / kind / "480p" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
    shutil.rmtree(root / "_tmp")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "mini.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def davis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_davis(tmp_path_factory.mktemp("davis"))


@pytest.fixture(scope="module")
def small_davis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short two-object sequence: enough plumbing for the (slow on CPU) model paths."""
    return make_davis(tmp_path_factory.mktemp("small"), names=("beta",), frames=4)


@pytest.fixture(scope="module")
def copy_flow_run(davis: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    rc = main([
        "eval", str(davis), "--set", "mini", "--dataset", "davis2017", "--out", str(out),
        "--method", "copy", "flow", "flow-plain", "--flow-preset", "medium", "--json", str(out / "s.json"), "--quiet",
    ])
    assert rc == 0
    return out, json.loads((out / "s.json").read_text())


def test_flow_beats_copy_and_files_exist(copy_flow_run: tuple[Path, dict]) -> None:
    out, summary = copy_flow_run
    assert set(summary["global"]) == GLOBAL_KEYS
    methods = summary["methods"]
    assert set(methods) == {"copy", "flow-medium", "flow-plain-medium"}
    assert methods["flow-medium"]["global"]["J&F"] > methods["copy"]["global"]["J&F"] + 0.05
    assert set(summary["ms_per_frame"]) == {"copy", "flow-medium", "flow-plain-medium"} and all(v > 0 for v in summary["ms_per_frame"].values())
    for m in ("copy", "flow-medium", "flow-plain-medium"):
        d = out / m
        assert len(list((d / "alpha").glob("*.png"))) == 8
        assert (d / "global_results-mini.csv").is_file() and (d / "per-sequence_results-mini.csv").is_file()
        with open(d / "per-object_results-mini.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [(r["Sequence"], r["Object"]) for r in rows] == [("alpha", "1"), ("beta", "1"), ("beta", "2")]
        js = json.loads((d / "results.json").read_text())
        assert set(js["sequences"]) == {"alpha", "beta"} and set(js["global"]) == GLOBAL_KEYS
        assert set(js["sequences"]["beta"]["objects"]) == {"1", "2"}
        assert 0.0 <= js["global"]["J"] <= 1.0
    chart = out / "jf_per_sequence.png"
    assert chart.is_file() and chart.stat().st_size > 1000


def test_results_rescoring_matches_run(copy_flow_run: tuple[Path, dict], davis: Path, tmp_path: Path) -> None:
    out, summary = copy_flow_run
    rc = main(["eval", str(davis), "--set", "mini", "--dataset", "davis2017", "--results", str(out / "flow-medium"),
               "--out", str(tmp_path / "re"), "--json", str(tmp_path / "re.json")])
    assert rc == 0
    again = json.loads((tmp_path / "re.json").read_text())
    assert again["global"] == summary["methods"]["flow-medium"]["global"]
    assert again["sequences"] == summary["methods"]["flow-medium"]["sequences"]


def test_missing_results_is_one_line_error(davis: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "res" / "alpha").mkdir(parents=True)
    rc = main(["eval", str(davis), "--set", "mini", "--dataset", "davis2017", "--results", str(tmp_path / "res"),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "missing prediction for alpha" in err and len(err.splitlines()) == 1


def test_rpmnet_random_r18_runs_end_to_end(small_davis: Path, tmp_path: Path) -> None:
    rc = main(["eval", str(small_davis), "--set", "mini", "--dataset", "davis2017", "--out", str(tmp_path),
               "--method", "rpmnet", "--model", "rpmnet_r18", "--size", "64", "--crf", "none", "fast", "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert set(s["methods"]) == {"rpmnet", "rpmnet+crf-fast"}
    assert s["methods"]["rpmnet+crf-fast"]["crf_ms_per_frame"] > 0
    masks = sorted((tmp_path / "rpmnet" / "beta").glob("*.png"))
    assert len(masks) == 4
    from rtvos.io import read_mask

    first, _ = read_mask(masks[0])
    assert set(np.unique(first)) <= {0, 1, 2}


def test_bad_size_is_rejected(davis: Path, tmp_path: Path) -> None:
    assert main(["eval", str(davis), "--set", "mini", "--out", str(tmp_path), "--size", "100"]) == 2


def test_ablate_grid_from_checkpoint_configs(small_davis: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from rtvos.models import create_model, save_checkpoint

    ck = tmp_path / "ckpts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variant in ("deformable", "conv3"):
            save_checkpoint(create_model("rpmnet_r18", matching=variant), ck / f"model_{variant}.pt")
    (ck / "notes.pt").write_text("not a checkpoint")  # skipped, not fatal
    out = tmp_path / "abl"
    rc = main(["ablate", str(ck), str(small_davis), "--set", "mini", "--dataset", "davis2017", "--size", "64",
               "--out", str(out), "--quiet"])
    assert rc == 0
    md = (out / "ablation.md").read_text().splitlines()
    assert md[0].startswith("| matching (J, %) | ResNet-18 |")
    assert md[2].startswith("| deformable |") and md[3].startswith("| conv3 |")
    with open(out / "ablation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["backbone"], r["matching"]) for r in rows] == [("resnet18", "deformable"), ("resnet18", "conv3")]
    assert all(0.0 <= float(r["J"]) <= 1.0 for r in rows)
    assert main(["ablate", str(tmp_path / "nothing"), str(small_davis), "--set", "mini"]) == 2


def test_attribute_table_groups_sequences(davis: Path, copy_flow_run: tuple[Path, dict], tmp_path: Path) -> None:
    from rtvos.eval import load_dataset
    from rtvos.eval.runner import attribute_table, score_results

    root = tmp_path / "attr"
    shutil.copytree(davis, root)
    (root / "db_info.yml").write_text(
        "sequences:\n- name: alpha\n  attributes: [FM, OCC]\n- name: beta\n  attributes: [FM]\n"
    )
    seqs = load_dataset(root, "davis2017", "mini")
    scores = score_results(seqs, copy_flow_run[0] / "flow-medium")
    table = attribute_table(scores, seqs)
    assert set(table) == {"FM", "OCC"} and table["FM"]["sequences"] == 2
    alpha = next(s for s in scores.sequences if s.name == "alpha")
    assert table["OCC"]["J"] == pytest.approx(alpha.mean_j)
    assert table["FM"]["J"] == pytest.approx(np.mean([s.mean_j for s in scores.sequences]))
    rc = main(["eval", str(root), "--set", "mini", "--dataset", "davis2017", "--results", str(copy_flow_run[0] / "flow-medium"),
               "--out", str(tmp_path / "attr_out")])
    assert rc == 0
    md = (tmp_path / "attr_out" / "attributes.md").read_text()
    assert "| FM |" in md and "| OCC |" in md
