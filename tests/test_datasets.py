"""Dataset readers on small DAVIS / SegTrack-v2 / YouTube-Objects style trees built in tmp_path."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtvos.eval.datasets import (
    DatasetError,
    load_dataset,
    parse_db_info,
    read_davis,
    read_label_image,
    read_segtrack,
    read_youtube_objects,
)
from rtvos.io import InputError

H, W = 24, 32
DEV = Path("/work/shared/data/davis2016-dev")


def frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def ids_mask(objects: int = 1, void: bool = False) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    for k in range(1, objects + 1):
        m[2 + 6 * (k - 1) : 6 + 6 * (k - 1), 4:12] = k
    if void:
        m[-2:, -2:] = 255
    return m


def save_jpg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95)


def save_png(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255] * (3 * 252))
    else:
        im = Image.fromarray(arr)
    im.save(path)


def make_davis(root: Path, year: int, n: int = 4, seqs: tuple[str, ...] = ("aa", "bb")) -> None:
    for s in seqs:
        for i in range(n):
            save_jpg(root / "JPEGImages" / "480p" / s / f"{i:05d}.jpg", frame(i))
            if year == 2016:
                save_png(root / "Annotations" / "480p" / s / f"{i:05d}.png", ids_mask(1) * 255)
            else:
                save_png(root / "Annotations" / "480p" / s / f"{i:05d}.png", ids_mask(2, void=True), palette=True)


# -- DAVIS --------------------------------------------------------------------------------------------------
def test_davis2016_layout_with_frame_pair_list_and_db_info(tmp_path: Path) -> None:
    make_davis(tmp_path, 2016)
    sets = tmp_path / "ImageSets" / "480p"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text(
        "".join(f"/JPEGImages/480p/bb/{i:05d}.jpg /Annotations/480p/bb/{i:05d}.png\n" for i in range(4))
    )
    (tmp_path / "Annotations" / "db_info.yml").write_text(
        "attributes: [AC, DB]\nsequences:\n- attributes: [DB, FM]\n  eval_t: true\n  name: bb\n"
        "  num_frames: 4\n  set: test\n  year: 2016\n- attributes: []\n  name: aa\n  set: training\n"
    )
    seqs = read_davis(tmp_path, year=2016, set="val")
    assert [s.name for s in seqs] == ["bb"]
    s = seqs[0]
    assert len(s) == 4 and s.object_ids == [1] and s.annotated_indices == [0, 1, 2, 3]
    img = s.load_frame(2)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    m = s.first_mask()
    assert m.dtype == np.uint8 and m.shape == (H, W) and set(np.unique(m).tolist()) == {0, 1}
    assert np.array_equal(m, ids_mask(1))
    assert s.attributes["attributes"] == ["DB", "FM"] and s.attributes["num_frames"] == 4
    assert not s.score_last_frame


def test_db_info_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "attributes: [AC]\nsequences:\n- attributes: [DB, FM]  # c\n  eval_t: True\n  name: bear\n  num_frames: 82\n"
    assert parse_db_info(text) == [{"attributes": ["DB", "FM"], "eval_t": True, "name": "bear", "num_frames": 82}]
    with pytest.raises(InputError, match=r"cannot parse /d/db_info.yml as YAML \(line \d+\)"):
        parse_db_info("sequences:\n- [unclosed\n", "/d/db_info.yml")
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML not installed
    with pytest.raises(InputError, match=r"reading /d/db_info.yml needs PyYAML: pip install 'rtvos\[eval\]'"):
        parse_db_info(text, "/d/db_info.yml")


def test_davis2017_palette_ids_and_void(tmp_path: Path) -> None:
    make_davis(tmp_path, 2017, n=3)
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("aa\n")
    (tmp_path / "davis_semantics.json").write_text('{"aa": {"1": "dog", "2": "person"}}')
    (s,) = load_dataset(tmp_path, "davis2017", set="val")
    assert s.name == "aa" and s.object_ids == [1, 2]
    m = s.load_gt(1)
    assert set(np.unique(m).tolist()) == {0, 1, 2}  # void 255 read as background
    assert read_label_image(s.gt_paths[1]).max() == 255  # raw reading keeps it
    assert s.attributes["semantics"] == {"1": "dog", "2": "person"}
    # the same tree read as DAVIS-2016 merges all objects (void stays background)
    (s16,) = read_davis(tmp_path, year=2016, set="val")
    assert np.array_equal(s16.load_gt(0), (ids_mask(2) > 0).astype(np.uint8))
    # a binary palette mask storing the object as index 255 is not all void
    save_png(s.gt_paths[2], ids_mask(1) * 255, palette=True)
    assert np.array_equal(s16.load_gt(2), ids_mask(1))


def test_davis_dev_set_file_sparse_masks_and_missing_list(tmp_path: Path) -> None:
    make_davis(tmp_path, 2017, n=3, seqs=("aa", "bb", "cc"))
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "dev.txt").write_text("cc\naa\n")
    (tmp_path / "Annotations" / "480p" / "aa" / "00002.png").unlink()
    seqs = load_dataset(tmp_path, "davis2016", set="dev")  # year-2016 reader finds ImageSets/2017/dev.txt
    assert [s.name for s in seqs] == ["cc", "aa"]
    assert seqs[1].gt_paths[2] is None and seqs[1].load_gt(2) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seqs = read_davis(tmp_path, year=2017, set="test-dev")
    assert [s.name for s in seqs] == ["aa", "bb", "cc"] and caught


def test_davis_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        read_davis(tmp_path / "nope", year=2017)
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Annotations/480p"):
        read_davis(tmp_path, year=2017)
    make_davis(tmp_path, 2017, n=2, seqs=("aa",))
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("aa\nzz\n")
    with pytest.raises(DatasetError, match="'zz'"):
        read_davis(tmp_path, year=2017, set="val")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset(tmp_path, "kitti")


@pytest.mark.skipif(not DEV.is_dir(), reason="shared DAVIS dev folder not present")
def test_shared_dev_folder_lists() -> None:
    seqs = load_dataset(DEV, "davis2016", set="dev")
    assert len(seqs) == 10 and all(s.object_ids == [1] for s in seqs)
    assert seqs[0].first_mask().max() == 1


# -- SegTrack-v2 ----------------------------------------------------------------------------------------------
def test_segtrack_single_and_multi_object(tmp_path: Path) -> None:
    jp, gtr = tmp_path / "JPEGImages", tmp_path / "GroundTruth"
    for i in range(3):  # single object: png frames, RGB 0/255 bmp masks with a soft edge
        save_png(jp / "frog" / f"frog_{i:05d}.png", frame(i))
        rgb = np.repeat((ids_mask(1) * 255)[..., None], 3, axis=2)
        rgb[2, 3] = 40  # anti-aliased pixel: background
        (gtr / "frog").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(gtr / "frog" / f"frog_{i:05d}.bmp")
    for i in range(4):  # two objects in numbered folders; bmp frames
        save_jpg(jp / "bmx" / f"bmx_{i:05d}.jpg", frame(i))
        for k in (1, 2):
            save_png(gtr / "bmx" / str(k) / f"bmx_{i:05d}.png", (ids_mask(2) == k).astype(np.uint8) * 255)
    sets = tmp_path / "ImageSets"
    sets.mkdir()
    (sets / "all.txt").write_text("frog\n*bmx\n")
    (sets / "bmx.txt").write_text("bmx/\n" + "".join(f"bmx_{i:05d}\n" for i in (1, 2, 3)))
    frog, bmx = read_segtrack(tmp_path)
    assert frog.name == "frog" and frog.object_ids == [1] and len(frog) == 3
    assert np.array_equal(frog.load_gt(1), ids_mask(1))
    assert frog.score_last_frame
    assert bmx.object_ids == [1, 2] and len(bmx) == 3  # the per-sequence list starts at frame 1
    assert bmx.frame_paths[0].name == "bmx_00001.jpg"
    assert np.array_equal(bmx.first_mask(), ids_mask(2))
    assert [s.name for s in load_dataset(tmp_path, "segtrackv2")] == ["frog", "bmx"]
    with pytest.raises(DatasetError, match="JPEGImages"):
        read_segtrack(tmp_path / "GroundTruth")


# -- YouTube-Objects ------------------------------------------------------------------------------------------
def test_youtube_objects_sparse_masks(tmp_path: Path) -> None:
    rel = Path("cat") / "data" / "0003" / "shots" / "002"
    for n in range(1, 26):
        save_jpg(tmp_path / "v1" / rel / f"frame{n:04d}.jpg", frame(n))
    labels = tmp_path / "youtube_masks" / rel / "labels"
    for n in (5, 15, 25):  # JPEG labels at half resolution, first one after frame 1
        small = np.asarray(Image.fromarray(ids_mask(1) * 255).resize((W // 2, H // 2), Image.Resampling.NEAREST))
        save_jpg(labels / f"{n:05d}.jpg", np.repeat(small[..., None], 3, axis=2))
    other = Path("dog") / "data" / "0001" / "shots" / "001"
    for n in (1, 2, 3):
        save_jpg(tmp_path / "youtube_masks" / other / f"frame{n:04d}.jpg", frame(n))  # frames beside labels
    save_png(tmp_path / "youtube_masks" / other / "labels" / "00001.png", ids_mask(1) * 255)
    seqs = read_youtube_objects(tmp_path)
    assert [s.name for s in seqs] == ["cat_0003_002", "dog_0001_001"]
    cat = seqs[0]
    assert len(cat) == 21 and cat.annotated_indices == [0, 10, 20]  # starts at the first labelled frame
    assert cat.frame_paths[0].name == "frame0005.jpg" and cat.attributes["category"] == "cat"
    m = cat.first_mask()
    assert m.shape == (H, W) and set(np.unique(m).tolist()) == {0, 1}  # resized to the frame
    assert cat.score_last_frame
    assert [s.name for s in load_dataset(tmp_path, "youtube-objects", set="dog")] == ["dog_0001_001"]
    with pytest.raises(DatasetError, match="youtube_masks"):
        read_youtube_objects(tmp_path / "v1")


def test_youtube_objects_davis_like_tree(tmp_path: Path) -> None:
    for i in range(6):
        save_jpg(tmp_path / "JPEGImages" / "car_01" / f"{i:05d}.jpg", frame(i))
    for i in (1, 4):
        save_png(tmp_path / "Annotations" / "car_01" / f"{i:05d}.png", ids_mask(1) * 255)
    (s,) = read_youtube_objects(tmp_path, set="car")
    assert len(s) == 5 and s.annotated_indices == [0, 3]
