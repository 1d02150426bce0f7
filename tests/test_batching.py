"""`rtvos.batching`: several streams' embeddings as one forward (issue #19, batched forward)."""

import threading

import numpy as np
import pytest
import torch

import rtvos
from rtvos.backends import create_backend
from rtvos.batching import BatchingBackend
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.io import InputError
from rtvos.multi import MultiTracker

SIZE = (64, 64)


@pytest.fixture(scope="module")
def net():
    return rtvos.load_network("default")


@pytest.mark.parametrize("backend", ["eager", "onnx"])
def test_batch_n_forward_matches_batch_1(net, backend):
    inner = create_backend(backend, net, SIZE, torch.device("cpu"))
    batched = BatchingBackend(inner, max_batch=3)
    xs = torch.rand(3, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        many = batched.forward(xs)
        ones = [inner.embed(xs[i: i + 1]) for i in range(3)]
    assert many.shape[0] == 3 and batched.batches == {3: 1}
    for i in range(3):
        assert torch.allclose(many[i: i + 1], ones[i], atol=1e-4), i


@pytest.mark.parametrize("backend", ["eager", "onnx"])
def test_concurrent_embeds_run_as_one_forward(net, backend):
    inner = create_backend(backend, net, SIZE, torch.device("cpu"))
    batched = BatchingBackend(inner, max_batch=2, window_s=30.0)  # the first caller waits for the second
    xs = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    out: dict[int, torch.Tensor] = {}

    def call(i: int) -> None:
        with torch.inference_mode():
            out[i] = batched.embed(xs[i: i + 1])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert batched.batches == {2: 1}
    prior = torch.zeros(1, 2, *out[0].shape[-2:]) if net.uses_prior else None  # the default network refines DIS
    with torch.inference_mode():
        for i in range(2):
            assert torch.allclose(out[i], inner.embed(xs[i: i + 1]), atol=1e-4), i
            # and the match the batched backend runs per stream is the inner one's
            assert torch.allclose(batched.match(out[0], out[i], prior), inner.match(out[0], out[i], prior), atol=1e-4)


@pytest.mark.parametrize("backend", ["eager", "onnx"])
def test_batched_streams_give_the_single_stream_masks(net, backend):
    clips = [make_synthetic_clip(num_frames=10, height=96, width=128, num_objects=2, seed=s) for s in (1, 2, 3)]
    opts = dict(size=64, backend=backend, device="cpu")
    multi = MultiTracker(net, batch=True, workers=2, **opts)
    for i, c in enumerate(clips):
        multi.add(f"s{i}", np.stack(c.frames), mask=c.masks[0])
    got: dict[str, list[np.ndarray]] = {}
    for sid, r in multi:
        got.setdefault(sid, []).append(r.mask)
    (shared,) = multi._backends.values()
    assert isinstance(shared, BatchingBackend)
    assert sum(n * k for n, k in shared.batches.items()) == 3 * 10  # every frame's embedding, once
    for i, c in enumerate(clips):
        ref = [r.mask for r in rtvos.track(np.stack(c.frames), mask=c.masks[0], model=net, **opts)]
        assert len(got[f"s{i}"]) == 10
        for a, b in zip(ref, got[f"s{i}"]):
            inter, union = np.logical_and(a == b, a > 0).sum(), np.logical_or(a > 0, b > 0).sum()
            assert (inter / union if union else 1.0) >= 0.999


def test_batch_needs_a_network(net):
    c = make_synthetic_clip(num_frames=3, height=48, width=64, num_objects=1, seed=0)
    with pytest.raises(InputError, match="no network"):
        MultiTracker("default", batch=True).add("s", np.stack(c.frames), mask=c.masks[0])
    with pytest.raises(ValueError, match="cannot run batched"):
        BatchingBackend(type("B", (), {"name": "compiled"})(), max_batch=2)  # type: ignore[arg-type]
