"""`rtvos.track`: the library's iterator over a video (the CLI's one data path), `Result` and COCO RLE."""

import json
import threading

import av
import numpy as np
import pytest

import rtvos
from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
from rtvos.io import InputError, read_mask
from rtvos.io.base import FrameSourceBase
from rtvos.io.rle import object_boxes, rle_area, rle_decode, rle_encode
from rtvos.io.sinks import JsonlSink, MaskVideoSink, check_output_folder, remove_previous_masks
from rtvos.track import ArraySource


@pytest.fixture(scope="module")
def clip():
    return make_synthetic_clip(num_frames=8, height=96, width=128, num_objects=2, seed=3)


@pytest.fixture(scope="module")
def seg():
    return rtvos.Segmenter(rtvos.load_model("default"), size=64, backend="eager")


def _pipeline_threads():
    return [t.name for t in threading.enumerate() if t.name in ("rtvos-reader", "rtvos-writer") and t.is_alive()]


def test_results_in_order_and_equal_to_rtvos_segment_pngs(clip, tmp_path):
    from rtvos.apps.cli import main

    paths = write_synthetic_clip(clip, tmp_path / "clip")
    out = tmp_path / "cli"
    assert main(["segment", str(paths.frames_dir), "--mask", str(paths.first_mask), "--out", str(out),
                 "--size", "64", "--backend", "eager", "--device", "cpu", "--quiet", "--no-video"]) == 0
    results = list(rtvos.track(paths.frames_dir, mask=paths.first_mask, size=64, backend="eager", device="cpu"))
    assert [r.frame_index for r in results] == list(range(clip.num_frames))
    assert results[0].anchored and not results[1].anchored
    for r in results:
        ids, _ = read_mask(out / f"{r.frame_index:05d}.png")
        assert np.array_equal(ids, r.mask), r
        assert r.masks.shape == (2, 96, 128) and r.ids == (1, 2)
        assert np.array_equal(r.masks.sum((1, 2)), r.areas)


def test_result_views_plot_save_json_and_repr(clip, seg, tmp_path):
    r = list(rtvos.track(clip.frames, mask=clip.masks[0], model=seg))[-1]
    doc = json.loads(json.dumps(r.to_json()))  # JSON-ready all the way down
    assert doc["frame_index"] == clip.num_frames - 1 and doc["size"] == [96, 128]
    for k, obj in enumerate(doc["objects"]):
        m = rle_decode(obj["rle"])
        assert np.array_equal(m, r.mask == obj["id"]) and obj["area"] == int(m.sum())
        x1, y1, x2, y2 = obj["box"]
        ys, xs = np.nonzero(m)
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    vis = r.plot()
    assert vis.shape == (96, 128, 3) and vis.dtype == np.uint8 and not np.array_equal(vis, r.image)
    path = r.save(tmp_path / "saved", overlay=True)
    assert np.array_equal(read_mask(path)[0], r.mask) and path.with_suffix(".jpg").is_file()
    text = repr(r)
    assert "\n" not in text and f"frame_index={r.frame_index}" in text and "96" in text
    assert r.scores is not None and r.scores.shape == (2, 96, 128)


def test_breaking_early_releases_the_source_and_flushes_sinks(clip, seg, tmp_path):
    closed = []

    class Spy(ArraySource):
        def close(self) -> None:
            closed.append(True)
            super().close()

    src = Spy(np.stack(clip.frames))
    log = tmp_path / "log.jsonl"
    tracking = rtvos.track(src, mask=clip.masks[0], model=seg, sinks=[JsonlSink(log)])
    for r in tracking:
        if r.frame_index == 2:
            break
    del r
    assert closed and not _pipeline_threads()
    s = tracking.summary()
    assert s.interrupted and s.stop_reason == "closed by the caller" and s.segmented == 3
    lines = log.read_text().splitlines()
    assert len(lines) == s.frames >= 1  # every frame handed to the writer was flushed before close returned
    # An exception in the loop body ends the run the same way.
    src2 = Spy(np.stack(clip.frames))
    closed.clear()
    with pytest.raises(ZeroDivisionError):
        with rtvos.track(src2, mask=clip.masks[0], model=seg) as t:
            for r in t:
                1 / 0
    assert closed and not _pipeline_threads()


def test_bgr_input_gives_the_same_masks_as_rgb(clip, seg):
    rgb = [r.mask for r in rtvos.track(clip.frames, mask=clip.masks[0], model=seg)]
    bgr_frames = (f[..., ::-1].copy() for f in clip.frames)  # a generator, as a cv2 loop would give
    results = list(rtvos.track(bgr_frames, mask=clip.masks[0], model=seg, bgr=True))
    assert all(np.array_equal(a, b.mask) for a, b in zip(rgb, results)) and len(results) == len(rgb)
    assert np.array_equal(results[0].image, clip.frames[0][..., ::-1])  # images come back in BGR


def test_sequential_mode_matches_threaded(clip, seg):
    a = [r.mask for r in rtvos.track(clip.frames, mask=clip.masks[0], model=seg)]
    b = [r.mask for r in rtvos.track(clip.frames, mask=clip.masks[0], model=seg, threaded=False)]
    assert len(a) == len(b) == clip.num_frames and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_box_and_point_prompts_make_one_object_each(clip, seg):
    boxes = []
    for m in clip.masks[0][None] == np.array([1, 2])[:, None, None]:
        ys, xs = np.nonzero(m)
        boxes.append((xs.min() - 2, ys.min() - 2, xs.max() + 3, ys.max() + 3))
    r = next(iter(rtvos.track(clip.frames, boxes=boxes, model=seg, max_frames=1)))
    assert r.ids == (1, 2) and all(a > 0 for a in r.areas)
    ys, xs = np.nonzero(clip.masks[0] == 1)
    r = next(iter(rtvos.track(clip.frames, points=[(int(xs.mean()), int(ys.mean()))], model=seg, max_frames=1)))
    assert r.ids == (1,) and r.mask[int(ys.mean()), int(xs.mean())] == 1


def test_reanchor_replaces_the_mask_at_the_next_frame(clip, seg):
    new = np.zeros_like(clip.masks[0])
    new[10:30, 10:40] = 5
    tracking = rtvos.track(clip.frames, mask=clip.masks[0], model=seg, threaded=False)
    seen = []
    for r in tracking:
        seen.append(r)
        if r.frame_index == 3:
            tracking.pipeline.reanchor(new)
    assert seen[4].anchored and np.array_equal(seen[4].mask, new) and 5 in seen[4].ids
    assert not seen[3].anchored and not seen[5].anchored


def test_misuse_raises_one_clear_error_before_the_model_loads(clip, monkeypatch, tmp_path):
    def no_load(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr("rtvos.models.load_model", no_load)
    with pytest.raises(InputError, match="either mask= or boxes="):
        rtvos.track(clip.frames, mask=clip.masks[0], boxes=[(0, 0, 5, 5)])
    with pytest.raises(InputError, match="prompt is needed"):
        rtvos.track(clip.frames)
    with pytest.raises(InputError, match="no object"):
        rtvos.track(clip.frames, mask=np.zeros((96, 128), np.uint8))
    with pytest.raises(InputError, match="TxHxWx3"):
        rtvos.track(np.zeros((4, 96, 128), np.uint8), mask=clip.masks[0])
    with pytest.raises(InputError, match="40x30 but the frames"):
        rtvos.track(np.stack(clip.frames), mask=np.ones((30, 40), np.uint8))
    with pytest.raises(InputError, match="nope.mp4"):
        rtvos.track(tmp_path / "nope.mp4", mask=clip.masks[0])


def test_frames_of_the_wrong_shape_fail_with_the_index(clip, seg):
    frames = [clip.frames[0], clip.frames[1], np.zeros((10, 10, 3), np.uint8)]
    got = []
    with pytest.raises(InputError, match="frame 2 is 10x10"):
        for r in rtvos.track(frames, mask=clip.masks[0], model=seg):
            got.append(r.frame_index)
    assert got == [0, 1]  # what was produced before the bad frame was delivered


def test_rle_round_trip_and_known_encoding():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 50, 2)
        m = rng.random((h, w)) < rng.random()
        r = rle_encode(m)
        assert np.array_equal(rle_decode(r), m) and rle_area(r) == m.sum()
    # pycocotools' encoding of a 4x4 identity (column-major runs 0,1,4,1,4,1,4,1 → "01400000")
    assert rle_encode(np.eye(4, dtype=bool)) == {"size": [4, 4], "counts": "01400000"}
    assert np.array_equal(rle_decode({"size": [2, 2], "counts": [1, 2, 1]}), np.array([[0, 1], [1, 0]], bool))
    with pytest.raises(InputError, match="cover 3 pixels"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_rle_matches_pycocotools():
    coco = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed (pip install pycocotools)")
    rng = np.random.default_rng(1)
    for i in range(100):
        h, w = rng.integers(1, 200, 2)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if i % 2:
            m[:] = 0
            m[h // 4 : h // 2, w // 3 :] = 1
        ref = coco.encode(np.asfortranarray(m))
        assert rle_encode(m)["counts"] == ref["counts"].decode()


def test_object_boxes_marks_lost_objects():
    m = np.zeros((10, 20), np.uint8)
    m[2:5, 3:9] = 1
    b = object_boxes(m, [1, 2])
    assert b[0].tolist() == [3, 2, 9, 5] and np.isnan(b[1]).all()


def test_jsonl_has_boxes_and_rle_and_mask_video(clip, seg, tmp_path):
    log, vid = tmp_path / "l.jsonl", tmp_path / "alpha.mp4"
    results = list(rtvos.track(clip.frames, mask=clip.masks[0], model=seg,
                               sinks=[JsonlSink(log), MaskVideoSink(vid, "alpha")]))
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == len(results)
    for line, r in zip(lines, results):
        assert [o["id"] for o in line["objects"]] == [1, 2]
        for o in line["objects"]:
            assert np.array_equal(rle_decode(o["rle"]), r.mask == o["id"]) and o["box"] is not None
    with av.open(str(vid)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == len(results)
    # H.264 is lossy; the matte must still agree with the masks on almost every pixel.
    agree = np.mean([((f > 127) == (r.mask > 0)).mean() for f, r in zip(frames, results)])
    assert agree > 0.98
    with pytest.raises(InputError, match="mask video mode"):
        MaskVideoSink(vid, "rainbow")


def test_check_output_folder_refuses_results_unless_exist_ok(tmp_path):
    check_output_folder(tmp_path / "new")  # absent: fine
    (tmp_path / "00000.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="already holds results .*--exist-ok"):
        check_output_folder(tmp_path)
    check_output_folder(tmp_path, exist_ok=True)
    assert (tmp_path / "00000.png").exists()  # removed only by remove_previous_masks, after every check
    assert remove_previous_masks(tmp_path) == 1
    assert not (tmp_path / "00000.png").exists() and (tmp_path / "notes.txt").exists()


def test_an_arbitrary_source_satisfies_the_protocol(clip, seg):
    class Mine(FrameSourceBase):
        name, fps, size, num_frames = "mine", 10.0, (96, 128), 3

        def __iter__(self):
            yield from ArraySource(clip.frames[:3])

    assert len(list(rtvos.track(Mine(), mask=clip.masks[0], model=seg))) == 3


def test_cli_several_boxes_points_exist_ok_and_mask_video(clip, tmp_path, capsys):
    from rtvos.apps.cli import main

    paths = write_synthetic_clip(clip, tmp_path / "clip")
    boxes = []
    for m in clip.masks[0][None] == np.array([1, 2])[:, None, None]:
        ys, xs = np.nonzero(m)
        boxes.append(f"{xs.min() - 2},{ys.min() - 2},{xs.max() + 3},{ys.max() + 3}")  # x1,y1,x2,y2
    out = tmp_path / "out"
    base = ["segment", str(paths.video), "--out", str(out), "--size", "64", "--backend", "eager", "--quiet",
            "--mask-video", str(tmp_path / "m.mp4"), "--jsonl", str(tmp_path / "l.jsonl")]
    assert main([*base, "--box", boxes[0], "--box", boxes[1]]) == 0
    first, _ = read_mask(out / "00000.png")
    assert set(np.unique(first)) == {0, 1, 2}
    assert (tmp_path / "m.mp4").stat().st_size > 0
    line = json.loads((tmp_path / "l.jsonl").read_text().splitlines()[0])
    assert [(o["id"], "rle" in o, o["box"] is not None) for o in line["objects"]] == [(1, True, True), (2, True, True)]
    # The folder now holds results: a second run is refused (exit 2, one line) unless --exist-ok.
    capsys.readouterr()
    assert main([*base, "--box", boxes[0]]) == 2
    err = capsys.readouterr().err
    assert "already holds results" in err and "--exist-ok" in err and "Traceback" not in err
    ys, xs = np.nonzero(clip.masks[0] == 2)
    assert main([*base, "--point", f"{int(xs.mean())},{int(ys.mean())}", "--exist-ok", "--max-frames", "3"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]  # no stale frames
    assert set(np.unique(read_mask(out / "00000.png")[0])) == {0, 1}
    assert main([*base, "--point", "5000,5", "--exist-ok"]) == 2
    assert "outside the 128x96 frame" in capsys.readouterr().err
