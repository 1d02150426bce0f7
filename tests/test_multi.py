"""`rtvos.MultiTracker`: many streams through one model in one process (issue #19, item 1)."""

import json
import logging
import threading
import time

import numpy as np
import pytest

import rtvos
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.io import InputError
from rtvos.io.base import Frame, FrameSourceBase
from rtvos.io.sinks import JsonlSink, MaskSink, Sink
from rtvos.multi import MultiTracker

OPTS = dict(size=64, backend="eager", device="cpu")


@pytest.fixture(scope="module")
def net():
    return rtvos.load_network("default")  # a network: the tests check that streams share its backend


@pytest.fixture(scope="module")
def clips():
    # Two frame sizes: streams of the same shape share one backend, the other builds its own.
    return [make_synthetic_clip(num_frames=12, height=96, width=128, num_objects=2, seed=1),
            make_synthetic_clip(num_frames=12, height=96, width=128, num_objects=1, seed=2),
            make_synthetic_clip(num_frames=12, height=80, width=144, num_objects=3, seed=3)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ious = []
    for k in np.union1d(np.unique(a), np.unique(b)):
        if k == 0:
            continue
        inter, union = np.logical_and(a == k, b == k).sum(), np.logical_or(a == k, b == k).sum()
        ious.append(inter / union if union else 1.0)
    return float(np.mean(ious)) if ious else 1.0


def _stream_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("rtvos-") and t.is_alive()
            and (t.name.endswith("-reader") or t.name.endswith("-writer"))]


@pytest.mark.parametrize("workers", [1, 2])
def test_n_streams_equal_n_single_runs_and_share_one_model(net, clips, tmp_path, workers):
    multi = MultiTracker(net, workers=workers, **OPTS)
    for i, c in enumerate(clips):
        multi.add(f"cam{i}", np.stack(c.frames), mask=c.masks[0], sinks=[MaskSink(tmp_path / f"cam{i}")])
    got: dict[str, list] = {}
    order = []
    for sid, r in multi:
        got.setdefault(sid, []).append(r)
        order.append(sid)
    assert not _stream_threads()
    for i, c in enumerate(clips):
        ref = list(rtvos.track(np.stack(c.frames), mask=c.masks[0], model=net, **OPTS))
        mine = got[f"cam{i}"]
        assert [r.frame_index for r in mine] == list(range(c.num_frames))
        for a, b in zip(ref, mine):
            assert _iou(a.mask, b.mask) >= 0.999, (i, a.frame_index)
        assert sorted(p.name for p in (tmp_path / f"cam{i}").glob("*.png")) == [f"{k:05d}.png" for k in range(12)]
    # Round-robin: with one worker no stream runs ahead of another by more than a frame or two at any point;
    # with a pool the streams advance at their own step cost, but none waits behind another's second frame.
    for end in range(3, len(order)):
        counts = [order[:end].count(f"cam{i}") for i in range(3)]
        if min(counts) < 12 and workers == 1:
            assert max(counts) - min(counts) <= 2, (end, counts)
        if max(counts) >= 3:
            assert min(counts) >= 1, (end, counts)
    # One backend per input shape, not per stream: the two 96x128 streams hold the same object.
    segs = [rec.segmenter for rec in multi._ended.values()]
    assert all(s.model is net for s in segs)
    st = {s.id: s for s in multi.status()}
    assert all(st[f"cam{i}"].state == "done" and st[f"cam{i}"].frames == 12 for i in range(3))
    assert st["cam0"].latency_p95_ms is not None and st["cam0"].dropped == 0


def test_backend_is_shared_between_streams_of_one_shape(net, clips):
    multi = MultiTracker(net, size=64, backend="onnx", device="cpu")
    for i, c in enumerate(clips):
        multi.add(f"s{i}", np.stack(c.frames[:3]), mask=c.masks[0])
    for _ in multi:
        pass
    segs = {rec.id: rec.segmenter for rec in multi._ended.values()}
    assert len(multi._backends) == 2  # 96x128 and 80x144 give two network input shapes
    assert segs["s0"].backend is segs["s1"].backend
    assert segs["s2"].backend is not segs["s0"].backend


def _slow_frames(clip, delay_s: float):
    for f in clip.frames:
        time.sleep(delay_s)
        yield f


def test_add_and_remove_streams_while_running(net, clips, tmp_path):
    a, b, c = clips
    multi = MultiTracker(net, **OPTS)
    multi.add("a", _slow_frames(a, 0.02), mask=a.masks[0], sinks=[JsonlSink(tmp_path / "a.jsonl")])
    multi.add("b", np.stack(b.frames), mask=b.masks[0])
    seen: dict[str, list[int]] = {}
    c_masks = []
    for sid, r in multi:
        seen.setdefault(sid, []).append(r.frame_index)
        if sid == "c":
            c_masks.append(r.mask)
        if sid == "b" and r.frame_index == 2:
            multi.add("c", np.stack(c.frames), mask=c.masks[0])  # from the loop itself
        if sid == "a" and r.frame_index == 4:
            removed = multi.remove("a")  # ends at the next pass, flushing its log
            assert removed.id == "a"
    assert seen["b"] == list(range(12)) and seen["c"] == list(range(12))
    assert 5 <= len(seen["a"]) < 12 and seen["a"] == list(range(len(seen["a"])))
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [x["frame_index"] for x in lines] == seen["a"]  # every frame yielded was flushed, nothing after
    assert "a" not in multi.ids()  # removed streams are forgotten, ended ones stay for status
    assert {s.id: s.state for s in multi.status()} == {"b": "done", "c": "done"}
    assert not _stream_threads()
    ref = list(rtvos.track(np.stack(c.frames), mask=c.masks[0], model=net, **OPTS))
    assert all(_iou(x.mask, y) >= 0.999 for x, y in zip(ref, c_masks))  # a stream added mid-run is unaffected


def test_remove_from_another_thread_and_keep_alive(net, clips):
    a = clips[0]
    multi = MultiTracker(net, keep_alive=True, **OPTS)
    frames: list[str] = []

    def consume() -> None:
        for sid, _ in multi:
            frames.append(sid)

    t = threading.Thread(target=consume)
    t.start()
    try:
        multi.add("x", _slow_frames(a, 0.05), mask=a.masks[0])
        deadline = time.time() + 30
        while len(frames) < 2 and time.time() < deadline:
            time.sleep(0.02)
        status = multi.remove("x")  # waits for the flush
        assert status.state == "removed" and status.frames >= 2
        n = len(frames)
        time.sleep(0.3)
        assert len(frames) == n and t.is_alive()  # keep_alive: no stream, still waiting for one
        with pytest.raises(KeyError, match="no stream 'x'"):
            multi.remove("x")
    finally:
        multi.stop()
        t.join(30)
    assert not t.is_alive() and not _stream_threads()


def test_bad_source_fails_its_stream_with_one_line_and_the_others_continue(net, clips, caplog):
    a, b, _ = clips
    bad = list(a.frames[:3]) + [np.zeros((10, 10, 3), np.uint8)] + list(a.frames[4:])
    multi = MultiTracker(net, **OPTS)
    multi.add("bad", bad, mask=a.masks[0])
    multi.add("good", np.stack(b.frames), mask=b.masks[0])
    seen: dict[str, int] = {}
    with caplog.at_level(logging.ERROR, logger="rtvos"):
        for sid, _ in multi:
            seen[sid] = seen.get(sid, 0) + 1
    assert seen["good"] == 12 and seen["bad"] <= 3
    st = {s.id: s for s in multi.status()}
    assert st["good"].state == "done" and st["bad"].state == "failed"
    assert "frame 3" in st["bad"].error and "\n" not in st["bad"].error
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"stream bad failed: {st['bad'].error}"]


class _RefusingSink(Sink):
    """An output that cannot open (a full disk, a folder it may not write)."""

    closed = 0

    def open(self, info):
        raise InputError(f"cannot write to /nowhere for {info.name}")

    def write(self, item):
        raise AssertionError("never opened, never written")

    def close(self):
        type(self).closed += 1


def test_an_output_that_cannot_open_fails_the_add_and_leaves_nothing(net, clips):
    """Sinks open at add (the writer is rtvos.track's SinkWriter): a bad output is one line there, not a stream
    that fails later; the source, threads and the stream's record are released, and the others run on."""
    a, b = clips[0], clips[1]
    multi = MultiTracker(net, **OPTS)
    multi.add("good", np.stack(b.frames), mask=b.masks[0])
    with pytest.raises(InputError, match="cannot write to /nowhere"):
        multi.add("bad", np.stack(a.frames), mask=a.masks[0], sinks=[_RefusingSink()])
    assert multi.ids() == ["good"] and _RefusingSink.closed == 0
    assert [sid for sid, _ in multi] == ["good"] * len(b.frames)
    multi.close()
    assert not _stream_threads()


def test_an_interrupt_while_a_stream_ends_still_flushes_and_lists_it(net, clips, tmp_path):
    """Ctrl-C/SIGTERM landing while a finished stream flushes (here: in its source's close) leaves the stream
    listed and flushed by the loop's clean-up, instead of losing it from status and its outputs unclosed."""
    from rtvos.track import ArraySource

    a = clips[0]

    class InterruptOnClose(ArraySource):
        interrupted = False

        def close(self) -> None:
            if not type(self).interrupted:
                type(self).interrupted = True
                raise KeyboardInterrupt
            super().close()

    multi = MultiTracker(net, **OPTS)
    multi.add("a", InterruptOnClose(np.stack(a.frames)), mask=a.masks[0], sinks=[MaskSink(tmp_path / "a")])
    with pytest.raises(KeyboardInterrupt):
        for _ in multi:
            pass
    (st,) = multi.status("a")
    assert InterruptOnClose.interrupted and st.state == "stopped" and st.frames == len(a.frames)
    assert len(list((tmp_path / "a").glob("*.png"))) == len(a.frames)
    multi.close()
    assert not _stream_threads()


def test_misuse_raises_at_add(net, clips, tmp_path):
    a = clips[0]
    multi = MultiTracker(net, **OPTS)
    with pytest.raises(InputError, match="no such file"):
        multi.add("x", tmp_path / "missing.mp4", mask=a.masks[0])
    with pytest.raises(InputError, match="first-frame prompt"):
        multi.add("x", np.stack(a.frames))
    with pytest.raises(InputError, match="stream id"):
        multi.add("a b", np.stack(a.frames), mask=a.masks[0])
    multi.add("x", np.stack(a.frames[:2]), mask=a.masks[0])
    with pytest.raises(InputError, match="already exists"):
        multi.add("x", np.stack(a.frames[:2]), mask=a.masks[0])
    multi.close()
    assert not _stream_threads()


class _FastLive(FrameSourceBase):
    """A live source that is not a LiveSource (a user's own): read on the stream's reader thread, in order."""

    def __init__(self, clip, n: int) -> None:
        super().__init__()
        self.name, self.fps, self.size, self.num_frames, self.is_live = "live", 200.0, clip.size, None, True
        self.clip, self.n = clip, n

    def __iter__(self):
        for i in range(self.n):
            time.sleep(0.002)
            yield Frame(source_index=i, image=self.clip.frames[i % self.clip.num_frames], captured_s=time.time())


class _FastCamera:
    """A camera (behind rtvos.io.live.LiveSource) that sends frames much faster than the model takes them."""

    fps, backend = 200.0, "fake"

    def __init__(self, clip, n: int) -> None:
        self.clip, self.n = clip, n

    def frames(self):
        for i in range(self.n):
            time.sleep(0.002)
            yield self.clip.frames[i % self.clip.num_frames], None

    def close(self) -> None:
        pass


def test_live_streams_keep_only_the_newest_frame(net, clips):
    """The camera's own policy (LiveSource, "drop") is the one place frames are dropped and counted: the
    MultiTracker polls it from its loop, with no queue or drop counter of its own."""
    from rtvos.io.live import LiveSource

    a = clips[0]
    camera = _FastCamera(a, 150)

    class Fast(LiveSource):
        display = name = "fast"

        def _connect(self):
            return camera

    src = Fast(reconnect=False)
    multi = MultiTracker(net, **OPTS)
    multi.add("live", src, mask=a.masks[0])
    indices = [r.source_index for _, r in multi]
    st = multi.status("live")[0]
    assert st.dropped > 0 and st.frames + st.dropped == 150  # exact accounting: shown or counted as dropped
    assert st.dropped == src.stats()["dropped"]  # the source's own counter, the only one
    assert indices == sorted(indices) and len(indices) == st.frames
    assert not _stream_threads()  # no reader thread of the stream's own


def test_resume_after_continues_a_file_stream_from_a_checkpoint(net, clips):
    a = clips[0]
    full = [r.mask for r in rtvos.track(np.stack(a.frames), mask=a.masks[0], model=net, **OPTS)]
    multi = MultiTracker(net, **OPTS)
    multi.add("r", np.stack(a.frames), mask=full[5], resume_after=5)
    got = [(r.frame_index, r.mask) for _, r in multi]
    assert [f for f, _ in got] == list(range(6, 12))  # frame 5 is not emitted again, none skipped
    assert all(_iou(m, full[f]) >= 0.9 for f, m in got)


def test_add_remove_cycles_leave_nothing_behind(net, clips):
    a = clips[0]
    multi = MultiTracker(net, keep_alive=True, **OPTS)
    seen = []

    def consume() -> None:
        for sid, _ in multi:
            seen.append(sid)

    t = threading.Thread(target=consume)
    t.start()
    try:
        base = None
        for i in range(20):
            multi.add(f"s{i}", _slow_frames(a, 0.01), mask=a.masks[0])
            deadline = time.time() + 30
            while f"s{i}" not in seen and time.time() < deadline:
                time.sleep(0.01)
            multi.remove(f"s{i}")
            base = base or threading.active_count()  # after the first cycle: the step pool lives while iterating
        assert threading.active_count() <= base and not _stream_threads()
        assert multi.ids() == [] and multi._ended == {} and len(multi._backends) == 1
    finally:
        multi.stop()
        t.join(30)


def test_resume_after_on_a_live_source_anchors_its_next_frame(net, clips):
    a = clips[0]
    multi = MultiTracker(net, **OPTS)
    multi.add("cam", _FastLive(a, 5), mask=a.masks[3], resume_after=41)
    got = [r for _, r in multi]
    assert got[0].frame_index == 42 and got[0].anchored and np.array_equal(got[0].mask, a.masks[3])
    assert [r.frame_index for r in got] == list(range(42, 42 + len(got)))


def test_resume_from_a_checkpoint_whose_objects_were_all_lost(net, clips):
    a = clips[0]
    multi = MultiTracker(net, **OPTS)
    multi.add("r", np.stack(a.frames), mask=np.zeros(a.size, np.uint8), resume_after=5)
    got = [(r.frame_index, r.mask) for _, r in multi]
    assert [f for f, _ in got] == list(range(6, 12)) and not any(m.any() for _, m in got)
    assert multi.status("r")[0].state == "done"


def test_step_pool_size_and_intra_op_threads(net, clips):
    import cv2
    import torch

    from rtvos.multi import usable_cores

    a, cores = clips[0], usable_cores()
    before = (torch.get_num_threads(), cv2.getNumThreads())
    for n in (1, 2):
        multi = MultiTracker(net, **OPTS)
        for i in range(n):
            multi.add(f"s{i}", np.stack(a.frames[:4]), mask=a.masks[0])
        seen = []
        for _sid, _r in multi:
            pool = multi._pool
            assert pool is not None and pool._max_workers == cores
            if len(multi._streams) == n:  # every stream still running
                seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        # The cores shared by the steps that can run at once: workers x threads never exceeds them, and a lone
        # stream gets them all.
        want = max(1, cores // min(cores, n))
        assert seen and set(seen) == {(want, want)}, (n, seen)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == before  # restored when iteration ends
    with pytest.raises(InputError, match="workers"):
        MultiTracker(net, workers=0, **OPTS)
    with pytest.raises(InputError, match="threads"):
        MultiTracker(net, threads=-1, **OPTS)


@pytest.mark.parametrize("model", ["default", "network"])
def test_resume_from_a_snapshot_continues_exactly(net, clips, model):
    a = clips[0]
    m = net if model == "network" else rtvos.load_model("default")  # DIS + the appearance stage
    opts = OPTS if model == "network" else dict(device="cpu")
    full = [r.mask for r in rtvos.track(np.stack(a.frames), mask=a.masks[0], model=m, **opts)]
    multi = MultiTracker(m, **opts)
    multi.add("r", np.stack(a.frames), mask=a.masks[0], max_frames=6)
    snaps = {}
    for sid, r in multi:
        if r.frame_index in (3, 5):
            snaps[r.frame_index] = multi.snapshot(sid)
    with pytest.raises(KeyError):
        multi.snapshot("r")  # ended
    for j, k in ((3, 5), (5, 5)):  # a snapshot older than the checkpoint replays frames j+1..k silently
        multi = MultiTracker(m, **opts)
        multi.add("r", np.stack(a.frames), mask=full[k], resume_after=k, state=(j, snaps[j]))
        got = [(r.frame_index, r.mask) for _, r in multi]
        assert [f for f, _ in got] == list(range(k + 1, 12))
        assert all(_iou(mask, full[f]) >= 0.999 for f, mask in got), (j, k)
    with pytest.raises(InputError, match="0 <= j <= k"):
        MultiTracker(m, **opts).add("r", np.stack(a.frames), mask=full[3], resume_after=3, state=(5, snaps[5]))
