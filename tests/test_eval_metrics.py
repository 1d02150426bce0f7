"""J/F and the DAVIS semi-supervised protocol against values worked out by hand."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from rtvos.eval.metrics import (
    GLOBAL_COLUMNS,
    DatasetScores,
    boundary_f,
    boundary_radius,
    db_statistics,
    disk,
    evaluate_dataset,
    evaluate_sequence,
    jaccard,
    seg2bmap,
)


def square(h: int = 100, w: int = 100, r0: int = 40, c0: int = 40, size: int = 20) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r0 : r0 + size, c0 : c0 + size] = True
    return m


# -- per-frame measures -------------------------------------------------------------------------------------
def test_jaccard_hand_values() -> None:
    a = square()
    assert jaccard(a, a) == 1.0
    assert jaccard(a, square(c0=0, r0=0, size=10)) == 0.0  # disjoint
    empty = np.zeros_like(a)
    assert jaccard(empty, empty) == 1.0  # official: empty union scores 1
    assert jaccard(empty, a) == 0.0
    assert jaccard(a, empty) == 0.0
    # shifted by k px along x: overlap 20×(20-k), union 800 - 20×(20-k)
    for k in (1, 3, 5):
        inter = 20 * (20 - k)
        assert jaccard(a, np.roll(a, k, axis=1)) == pytest.approx(inter / (800 - inter))


def test_disk_and_radius_follow_official() -> None:
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert int(disk(2).sum()) == 13  # (±2,0),(0,±2) in, (±2,±1) out
    assert disk(8.0).shape == (17, 17)
    assert boundary_radius((480, 854)) == 8.0  # ceil(0.008 * 979.7)
    assert boundary_radius((100, 100)) == 2.0  # ceil(1.13)
    assert boundary_radius((100, 100), bound_th=3) == 3.0  # >= 1 means pixels


def test_seg2bmap_square_is_shifted_perimeter() -> None:
    b = seg2bmap(square())
    # 1-px boundary offset half a pixel to the origin: the perimeter of rows 39..59 × cols 39..59
    ref = np.zeros_like(b)
    ref[39:60, 39:60] = True
    ref[40:59, 40:59] = False
    assert np.array_equal(b, ref)
    assert int(b.sum()) == 80
    # vectorised over leading axes
    stack = np.stack([square(), np.zeros((100, 100), bool)])
    assert np.array_equal(seg2bmap(stack)[0], b) and not seg2bmap(stack)[1].any()


def test_boundary_f_hand_values() -> None:
    a = square()  # 100×100 image -> tolerance 2 px
    empty = np.zeros_like(a)
    assert boundary_f(a, a) == 1.0
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, a) == 0.0  # gt empty, prediction not: precision 0, recall 1
    assert boundary_f(a, empty) == 0.0
    assert boundary_f(a, square(r0=0, c0=0, size=10)) == 0.0  # far apart
    for k in (1, 2):  # within tolerance
        assert boundary_f(a, np.roll(a, k, axis=1)) == 1.0
    # shift by 3: of the 80 boundary pixels, 20 + 20 on the top/bottom rows, 4 on the near side and 0 on the
    # far side lie within the radius-2 disk of the other boundary -> P = R = 44/80
    assert boundary_f(a, np.roll(a, 3, axis=1)) == pytest.approx(0.55)


# -- statistics ---------------------------------------------------------------------------------------------
def test_db_statistics_recall_and_decay() -> None:
    m, r, d = db_statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0.0]))
    # 8 frames: bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]; first bin v[0:3], last v[5:8]
    assert (m, r, d) == (0.5, 0.5, 1.0)
    m, r, d = db_statistics(np.array([0.9, 0.6, 0.5, 0.4, 0.2]))
    assert m == pytest.approx(0.52)
    assert r == pytest.approx(0.4)  # 0.5 is not > 0.5
    assert d == pytest.approx((0.9 + 0.6) / 2 - (0.4 + 0.2) / 2)
    # vectorised over objects, NaN for an empty series
    m, r, d = db_statistics(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert m.tolist() == [1.0, 0.0] and d.tolist() == [0.0, 0.0]
    m, r, d = db_statistics(np.zeros((2, 0)))
    assert np.isnan(m).all()


# -- protocol -----------------------------------------------------------------------------------------------
def two_objects(t: int, shift: int = 0) -> np.ndarray:
    m = np.zeros((60, 80), np.uint8)
    m[10:30, 10 + shift : 30 + shift] = 1
    m[35:55, 45:70] = 2
    return m


def test_first_and_last_frames_are_not_scored() -> None:
    gt = [two_objects(t) for t in range(6)]
    pred = [g.copy() for g in gt]
    pred[0][:] = 0  # wrong on the first and the last frame only
    pred[5][:] = 0
    s = evaluate_sequence(gt, pred, name="seq")
    assert s.object_ids == [1, 2]
    assert s.frame_indices.tolist() == [1, 2, 3, 4]
    assert s.J.shape == (2, 4) and (s.J == 1).all() and (s.F == 1).all()
    # switching the rule off scores them
    s2 = evaluate_sequence(gt, pred, skip_first=False, skip_last=False)
    assert s2.J[:, 0].tolist() == [0.0, 0.0] and s2.J[:, -1].tolist() == [0.0, 0.0]


def test_missing_extra_and_void_objects() -> None:
    gt = [two_objects(t) for t in range(5)]
    pred = [np.where(g == 2, 0, g).astype(np.uint8) for g in gt]  # object 2 never predicted
    s = evaluate_sequence(gt, pred)
    assert (s.J[0] == 1).all() and (s.J[1] == 0).all() and (s.F[1] == 0).all()
    # an extra predicted id is ignored (the official tool refuses such files; strict=True does too)
    extra = [g.copy() for g in gt]
    for e in extra:
        e[0:5, 0:5] = 7
    assert (evaluate_sequence(gt, extra).J == 1).all()
    with pytest.raises(ValueError, match="id 7"):
        evaluate_sequence(gt, extra, strict=True)
    # void (255) in the ground truth is background, as in the official semi-supervised evaluation
    void_gt = [g.copy() for g in gt]
    for v in void_gt:
        v[0:5, 70:80] = 255
    s = evaluate_sequence(void_gt, [g.copy() for g in gt])
    assert s.object_ids == [1, 2] and (s.J == 1).all()


def test_object_absent_from_ground_truth_in_some_frames() -> None:
    gt = [two_objects(t) for t in range(6)]
    for t in (2, 3):
        gt[t][gt[t] == 2] = 0  # object 2 leaves the scene
    pred = [g.copy() for g in gt]
    pred[3][35:55, 45:70] = 2  # predicted where it is gone
    s = evaluate_sequence(gt, pred)
    assert s.J[1].tolist() == [1.0, 1.0, 0.0, 1.0]  # both empty -> 1, gt empty/pred not -> 0
    assert s.F[1].tolist() == [1.0, 1.0, 0.0, 1.0]
    # object ids come from the first frame (1..max), so an id first seen later is not an object
    late = [g.copy() for g in gt]
    late[2][0:4, 0:4] = 3
    assert evaluate_sequence(late, [g.copy() for g in late]).object_ids == [1, 2]


def test_sparse_annotation_and_shift() -> None:
    gt: list[np.ndarray | None] = [two_objects(t) for t in range(7)]
    gt[2] = gt[4] = None
    pred = [two_objects(t, shift=3) for t in range(7)]
    s = evaluate_sequence(gt, pred, skip_last=False)
    assert s.frame_indices.tolist() == [1, 3, 5, 6]
    inter = 20 * 17
    assert np.allclose(s.J[0], inter / (800 - inter)) and (s.J[1] == 1).all()
    with pytest.raises(ValueError, match="predictions"):
        evaluate_sequence(gt, pred[:-1])


def test_series_statistics_through_the_protocol() -> None:
    # object 1 degrades: exact for the first half of the scored frames, lost afterwards
    n = 10
    gt = [two_objects(t) for t in range(n)]
    pred = [g.copy() if t < 5 else np.where(g == 1, 0, g).astype(np.uint8) for t, g in enumerate(gt)]
    s = evaluate_sequence(gt, pred, name="decay")
    mean, recall, decay = s.stats("J")
    assert s.J[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert mean[0] == 0.5 and recall[0] == 0.5 and decay[0] == 1.0
    assert mean[1] == 1.0 and decay[1] == 0.0
    ds = DatasetScores([s])
    g = ds.global_table()
    assert list(g) == list(GLOBAL_COLUMNS)
    assert g["J-Mean"] == pytest.approx(0.75) and g["J-Decay"] == pytest.approx(0.5)
    assert g["J&F-Mean"] == pytest.approx((g["J-Mean"] + g["F-Mean"]) / 2)


# -- tables and files ---------------------------------------------------------------------------------------
def test_tables_json_and_csv(tmp_path) -> None:
    a = [two_objects(t) for t in range(5)]
    b = [np.where(g == 2, 1, g).astype(np.uint8) for g in a]  # one object with ids 1 only
    items = [("a", a, [g.copy() for g in a]), ("b", b, [np.zeros_like(g) for g in b])]
    ds = evaluate_dataset(items)
    rows = ds.sequence_table()
    assert [r["Sequence"] for r in rows] == ["a_1", "a_2", "b_1"]
    assert rows[0]["J-Mean"] == 1.0 and rows[2]["J-Mean"] == 0.0
    g = ds.global_table()
    assert g["J-Mean"] == pytest.approx(2 / 3) and g["J-Recall"] == pytest.approx(2 / 3)
    js = ds.to_json()
    json.dumps(js)  # serialisable as is
    assert set(js["global"]) == {"J&F", "J", "J-recall", "J-decay", "F", "F-recall", "F-decay"}
    assert js["sequences"]["a"]["objects"]["2"] == {"J": 1.0, "F": 1.0}
    assert js["sequences"]["b"]["J&F"] == 0.0
    gp, sp = ds.write_csv(tmp_path, set_name="val")
    assert gp.name == "global_results-val.csv" and sp.name == "per-sequence_results-val.csv"
    with open(gp) as fh:
        header, values = list(csv.reader(fh))
    assert header == list(GLOBAL_COLUMNS) and values[1] == "0.667"
    lines = sp.read_text().splitlines()
    assert lines[0] == "Sequence,J-Mean,F-Mean" and lines[1] == "a_1,1.000,1.000" and lines[3] == "b_1,0.000,0.000"
    assert ds.write_csv(tmp_path)[0].name == "global_results.csv"


def test_paths_workers_and_empty_series(tmp_path) -> None:
    gts, preds = [], []
    for t in range(5):
        g = two_objects(t)
        p = two_objects(t, shift=3)
        gts.append(tmp_path / f"g{t}.png")
        preds.append(tmp_path / f"p{t}.png")
        Image.fromarray(g).save(gts[-1])
        Image.fromarray(p).save(preds[-1])
    arrays = [("x", [two_objects(t) for t in range(5)], [two_objects(t, shift=3) for t in range(5)])]
    ref = evaluate_dataset(arrays).global_table()
    from_files = evaluate_dataset([("x", gts, preds)]).global_table()
    pooled = evaluate_dataset([("x", gts, preds), ("y", gts, gts)], workers=2)
    assert from_files == ref
    assert pooled.sequences[0].name == "x" and pooled.global_table()["J-Mean"] > ref["J-Mean"]
    # two frames: nothing left to score -> NaN statistics, dropped from the global means
    short = evaluate_dataset([("s", gts[:2], preds[:2]), ("x", gts, preds)])
    assert math.isnan(short.sequences[0].mean_j)
    assert short.global_table()["J-Mean"] == pytest.approx(ref["J-Mean"])
    assert short.to_json()["sequences"]["s"]["J"] is None
