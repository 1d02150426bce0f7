"""`rtvos viz`: PNGs of the right size; composed sampling locations follow the offsets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rtvos.apps.cli import main
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.models import create_model
from rtvos.viz import matching_inputs, sampling_locations


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("frames")
    clip = make_synthetic_clip(num_frames=2, height=72, width=96, seed=3)
    paths = []
    for i, f in enumerate(clip.frames):
        p = d / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths[0], paths[1]


def _png_shape(path: Path) -> tuple[int, ...]:
    assert path.is_file() and path.stat().st_size > 0
    img = cv2.imread(str(path))
    assert img is not None
    return img.shape


def test_viz_embed(frames: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "e.png"
    assert main(["viz", "embed", str(frames[0]), "--model", "rpmnet_r18", "--size", "64", "--out", str(out)]) == 0
    assert _png_shape(out) == (72, 96, 3)
    assert cv2.imread(str(out)).std() > 0  # PCA colours vary over the frame


def test_viz_sampling(frames: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.png"
    rc = main(["viz", "sampling", str(frames[0]), str(frames[1]), "--model", "rpmnet_r18", "--size", "64",
               "--pixel", "30", "40", "--out", str(out)])
    assert rc == 0
    assert _png_shape(out) == (72, 96, 3)
    assert main(["viz", "sampling", str(frames[0]), str(frames[1]), "--model", "rpmnet_r18", "--size", "64",
                 "--pixel", "500", "40", "--out", str(out)]) == 2


def test_viz_similarity(frames: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from rtvos.models import save_checkpoint

    cks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variant in ("deformable", "dilated3"):
            cks.append(str(save_checkpoint(create_model("rpmnet_r18", matching=variant), tmp_path / f"{variant}.pt")))
    out = tmp_path / "c.png"
    rc = main(["viz", "similarity", str(frames[0]), str(frames[1]), "--checkpoints", *cks, "--size", "64",
               "--grid", "2", "--out", str(out)])
    assert rc == 0
    assert _png_shape(out) == (400, 640, 3)
    printed = capsys.readouterr().out
    assert "deformable (deformable)" in printed and "dilated3 (dilated3)" in printed


def test_sampling_locations_compose_offsets() -> None:
    torch.manual_seed(0)
    model = create_model("rpmnet_r18").eval()
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    _, _, convs = matching_inputs(model, frame, frame, 64)
    assert len(convs) == 3
    zero = sampling_locations(convs, (8, 8))  # zero-initialised offsets: plain 3×3 taps composed
    assert [len(lv) for lv in zero] == [9, 81, 225]
    assert {tuple(p) for p in zero[0]} == {(8 + dy, 8 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert zero[2].min(0).tolist() == [5, 5] and zero[2].max(0).tolist() == [11, 11]
    d3 = convs[-1][0]
    with torch.no_grad():  # a constant offset on D3 shifts its taps and, through rounding, everything below
        d3.offset_conv.bias.copy_(torch.tensor([2.0, -1.0] * 9))
    moved = sampling_locations(convs, (8, 8))
    assert np.allclose(moved[0], zero[0] + [2.0, -1.0])
    assert np.allclose(moved[2].min(0), [7, 4])
