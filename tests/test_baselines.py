"""Copy and optical-flow baselines on a synthetic moving textured square."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rtvos.eval.baselines import CopyBaseline, FlowBaseline
from rtvos.eval.metrics import evaluate_sequence

H, W, T, SIDE, SPEED = 96, 128, 12, 28, 3


def texture(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)  # smooth enough for flow, still textured


def moving_square() -> tuple[list[np.ndarray], list[np.ndarray]]:
    bg = texture(1, (H, W))
    fg = texture(2, (SIDE, SIDE))
    frames, masks = [], []
    for t in range(T):
        y, x = 30, 10 + SPEED * t
        img = bg.copy()
        img[y : y + SIDE, x : x + SIDE] = fg
        m = np.zeros((H, W), np.uint8)
        m[y : y + SIDE, x : x + SIDE] = 1
        frames.append(img)
        masks.append(m)
    return frames, masks


def run(method, frames: list[np.ndarray], first: np.ndarray) -> list[np.ndarray]:
    out = [method.step(frames[0], first)]
    out += [method.step(f) for f in frames[1:]]
    return out


def test_flow_beats_copy_on_moving_square() -> None:
    frames, masks = moving_square()
    copy = run(CopyBaseline(), frames, masks[0])
    flow = run(FlowBaseline(), frames, masks[0])
    for out in (copy, flow):
        assert all(o.shape == (H, W) and o.dtype == np.uint8 for o in out)
    assert all(np.array_equal(o, masks[0]) for o in copy)
    s_copy = evaluate_sequence(masks, copy)
    s_flow = evaluate_sequence(masks, flow)
    assert s_flow.mean_jf > s_copy.mean_jf + 0.1
    assert (s_flow.J >= s_copy.J).all() and (s_flow.F >= s_copy.F - 1e-9).all()
    # the flow follows the object: most of the last frame's object is covered, where the copy has left it
    # (backward warping labels the disoccluded trail as object too, hence no J ~ 1 here)
    last = masks[-1] > 0
    assert (flow[-1][last] == 1).mean() > 0.7
    assert (copy[-1][last] == 1).mean() < 0.1


def test_flow_keeps_ids_and_handles_empty_masks() -> None:
    frames, masks = moving_square()
    first = masks[0] * 7  # ids are arbitrary uint8 values
    flow = FlowBaseline()
    out = run(flow, frames[:4], first)
    assert set(np.unique(out[-1]).tolist()) == {0, 7}
    empty = FlowBaseline()
    assert not run(empty, frames[:3], np.zeros((H, W), np.uint8))[-1].any()


def test_streaming_contract() -> None:
    frames, masks = moving_square()
    for method in (CopyBaseline(), FlowBaseline()):
        with pytest.raises(RuntimeError, match="mask"):
            method.step(frames[0])
        with pytest.raises(ValueError):
            method.step(frames[0][..., 0], masks[0])
        method.step(frames[0], masks[0])
        re_anchor = np.zeros((H, W), np.uint8)
        re_anchor[:5, :5] = 2
        assert np.array_equal(method.step(frames[1], re_anchor), re_anchor)
        assert set(np.unique(method.step(frames[2])).tolist()) <= {0, 2}
        method.reset()
        with pytest.raises(RuntimeError):
            method.step(frames[3])
