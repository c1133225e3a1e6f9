from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from runtime.backends import load_backend
from runtime.infer import build_stages
from runtime.pipeline import Pipeline
from runtime.postprocess import labels_from_output
from runtime.preprocess import preprocess_for
from runtime.sources import Frame


def test_threaded_pipeline_equals_direct_backend(onnx_model, colour_frames):
    frames = [Frame(i, f, float(i), f"f{i}") for i, f in enumerate(colour_frames(8))]
    with load_backend(onnx_model(dynamic=True)) as b:
        pipe = Pipeline(frames, build_stages(b, (32, 64), "overlay", 0.5), queue_size=1)
        out = list(pipe.run())
        # drawing's labels are at the model's output size (runtime.postprocess.Painter)
        direct = [labels_from_output(b.infer(preprocess_for(b.info, f.image, (32, 64))))[0] for f in frames]
    assert [f.index for f, _, _ in out] == list(range(8))
    for (_, labels, picture), ref in zip(out, direct):
        np.testing.assert_array_equal(labels, ref)
        assert picture.shape == (64, 128, 3)
    s = pipe.summary()
    assert s["frames_in"] == s["frames_out"] == 8 and s["dropped"] == 0
    assert set(s["stages"]) == {"capture", "preprocess", "infer", "draw"} and s["stages"]["infer"]["n"] == 8


def test_drop_oldest_keeps_the_freshest_frames():
    exhausted = threading.Event()

    def source():
        yield from range(30)
        exhausted.set()

    def slow(i):  # the first item waits until capture has produced everything
        exhausted.wait(5)
        return i

    pipe = Pipeline(source(), [("slow", slow)], queue_size=1, drop_oldest=True)
    out = list(pipe.run())
    assert out == sorted(out) and out[-1] == 29 and len(out) < 30
    assert pipe.summary()["dropped"] == 30 - len(out)


def test_without_drop_every_frame_arrives():
    pipe = Pipeline(range(50), [("a", lambda i: i * 2), ("skip_odd", lambda i: None if i % 4 else i)], queue_size=1)
    assert list(pipe.run()) == [i * 2 for i in range(50) if (i * 2) % 4 == 0]


def test_stage_error_reaches_caller_and_threads_end():
    def boom(i):
        if i == 3:
            raise ValueError("bad frame 3")
        return i

    pipe = Pipeline(range(100), [("boom", boom)], queue_size=2)
    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for i in pipe.run():
            got.append(i)
    assert got == [0, 1, 2]
    assert not any(t.is_alive() for t in pipe._threads)


def test_leaving_early_stops_an_endless_source():
    closed = []

    def endless():
        i = 0
        while True:
            yield i
            i += 1

    pipe = Pipeline(endless(), [("id", lambda i: i)], close=lambda: closed.append(True))
    run = pipe.run()
    assert [next(run) for _ in range(5)] == [0, 1, 2, 3, 4]
    run.close()
    assert closed and pipe.stopped and not any(t.is_alive() for t in pipe._threads)


def _staggered(worker: int, done: list, delay_s: float):
    """A parallel-stage function: worker 0 finishes late, so that later items on other workers finish first."""

    def fn(i):
        time.sleep(delay_s if worker == 0 else 0.0)
        done.append(i)
        return None if i % 5 == 4 else i * 10  # every fifth item is dropped

    return fn


def test_parallel_stage_passes_results_on_in_input_order():
    done: list[int] = []
    pipe = Pipeline(range(20), [("double", lambda i: i), ("work", [_staggered(w, done, 0.03) for w in range(3)])],
                    queue_size=1)
    out = list(pipe.run())
    assert out == [i * 10 for i in range(20) if i % 5 != 4]
    assert done != sorted(done)  # the workers did finish out of order: the reorder buffer put them back
    s = pipe.summary()
    assert s["workers"] == {"double": 1, "work": 3} and s["stages"]["work"]["n"] == 20
    assert sorted(t.name for t in pipe._threads if t.name.startswith("work")) == ["work-0", "work-1", "work-2"]


def test_parallel_stage_error_reaches_caller_and_threads_end():
    def boom(i):
        if i == 7:
            raise ValueError("bad item 7")
        return i

    pipe = Pipeline(range(100), [("boom", [boom, boom, boom])], queue_size=2)
    got = []
    with pytest.raises(ValueError, match="bad item 7"):
        for i in pipe.run():
            got.append(i)
    assert got == list(range(len(got))) and len(got) <= 7
    assert not any(t.is_alive() for t in pipe._threads)


def test_leaving_a_parallel_stage_early_stops_every_worker():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    pipe = Pipeline(endless(), [("id", [lambda i: i] * 4)], max_in_flight=6)
    run = pipe.run()
    assert [next(run) for _ in range(10)] == list(range(10))
    run.close()
    assert pipe.stopped and not any(t.is_alive() for t in pipe._threads)
