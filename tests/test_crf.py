"""CRF refinement: both CRFs clean a noisy mask; the fast one agrees with pydensecrf when that is installed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rtvos.data.synthetic import make_synthetic_clip
from rtvos.eval.crf import dense_crf, fast_crf, have_pydensecrf, refine_mask, soft_unary
from rtvos.eval.metrics import jaccard


def _noisy_case(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clip = make_synthetic_clip(num_frames=1, height=128, width=160, seed=seed)
    frame, gt = clip.frames[0], clip.masks[0]
    noisy = cv2.dilate(gt, np.ones((7, 7), np.uint8))
    rng = np.random.default_rng(seed)
    for _ in range(20):
        y, x = rng.integers(0, 125), rng.integers(0, 157)
        noisy[y : y + 3, x : x + 3] = 1
    return frame, gt, noisy


def test_soft_unary_confidence() -> None:
    p = soft_unary(np.array([[0, 1], [2, 0]]), 3, 0.8)
    assert p.shape == (3, 2, 2) and np.allclose(p.sum(0), 1.0)
    assert p[1, 0, 1] == pytest.approx(0.8) and p[0, 0, 1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="confidence"):
        soft_unary(np.zeros((2, 2), int), 2, 1.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_crf_improves_noisy_mask(seed: int) -> None:
    frame, gt, noisy = _noisy_case(seed)
    before = jaccard(gt > 0, noisy > 0)
    after = jaccard(gt > 0, refine_mask(frame, noisy, "fast") > 0)
    assert after > before + 0.1


def test_refine_keeps_ids_and_none_is_identity() -> None:
    frame, gt, noisy = _noisy_case()
    ids = np.where(noisy > 0, 7, 0).astype(np.uint8)
    out = refine_mask(frame, ids, "fast")
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 7}
    assert refine_mask(frame, ids, "none") is ids
    with pytest.raises(ValueError, match="crf must be"):
        refine_mask(frame, ids, "bogus")


def test_fast_crf_bad_input() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        fast_crf(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="window"):
        fast_crf(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32), window=4)


def test_dense_crf_improves_and_fast_agrees() -> None:
    if not have_pydensecrf():
        print("SKIP reason: pydensecrf not installed (pip install pydensecrf2)")
        pytest.skip("pydensecrf not installed (pip install pydensecrf2)")
    frame, gt, noisy = _noisy_case()
    probs = soft_unary(noisy, 2)
    dense = dense_crf(frame, probs)
    fast = fast_crf(frame, probs)
    j_noisy, j_dense, j_fast = (jaccard(gt > 0, m > 0) for m in (noisy, dense, fast))
    assert j_dense > j_noisy + 0.1
    assert abs(j_dense - j_fast) < 0.12  # fast truncates the 80 px bilateral kernel to a local window
    assert jaccard(dense > 0, fast > 0) > 0.85


def test_dense_crf_missing_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def fake(name: str, *a: object, **k: object) -> object:
        if name.startswith("pydensecrf"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(RuntimeError, match="pydensecrf2"):
        dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32))
