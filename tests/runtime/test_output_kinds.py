"""Output kinds (issue 23): runtime.postprocess.labels_at on hand-computed cases, the output kind and stride
in the data block (round trip, older models, refusals) and the backends reporting it."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import load_backend
from runtime.errors import UserError
from runtime.metadata import ONNX_DATA_KEY, OUTPUT_KINDS, DataInfo, default_palette, output_of
from runtime.postprocess import labels_at, labels_from_output


def test_native_labels_are_nearest_upsampled():
    native = np.array([[0, 1], [2, 3]], np.uint8)
    want = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], np.uint8)
    np.testing.assert_array_equal(labels_at(native, "native-labels", (4, 4)), want)
    np.testing.assert_array_equal(labels_at(want, "labels", (4, 4)), want)  # full-size labels: as they are


def test_native_logits_are_upsampled_bilinearly_then_argmaxed():
    """2 classes at 2x2 -> 4x4. Class 0 is 0 everywhere; class 1 is [[1.5, -2.5], [-2.5, -2.5]]. Half-pixel
    centres put the 4 output rows/columns at source positions 0, .25, .75, 1 (edges clamped), so class 1
    becomes 4 (1 - ty)(1 - tx) - 2.5: row 0 [1.5, .5, -1.5, -2.5], row 1 [.5, -.25, -1.75, -2.5], rows 2-3
    negative. Nearest upsampling of the native arg-max would also mark (1, 1)."""
    logits = np.zeros((2, 2, 2), np.float32)
    logits[1] = [[1.5, -2.5], [-2.5, -2.5]]
    want = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    got = labels_at(logits, "native", (4, 4))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(labels_at(logits, "full", (4, 4)), want)  # one definition for logits
    nearest = labels_at(logits.argmax(0).astype(np.uint8), "native-labels", (4, 4))
    assert nearest[1, 1] == 1 and (nearest != want).sum() == 1
    # the batched form, with the kind or from the rank
    np.testing.assert_array_equal(labels_from_output(logits[None], (4, 4), "native")[0], want)
    np.testing.assert_array_equal(labels_from_output(logits[None], (4, 4))[0], want)


def test_labels_at_refuses_a_shape_that_is_not_its_kind():
    with pytest.raises(ValueError, match="K x H x W"):
        labels_at(np.zeros((4, 4), np.uint8), "native", (8, 8))
    with pytest.raises(ValueError, match="H x W labels"):
        labels_at(np.zeros((2, 4, 4), np.float32), "native-labels", (8, 8))
    with pytest.raises(ValueError, match="unknown output kind"):
        labels_at(np.zeros((2, 4, 4), np.float32), "half", (8, 8))


INFO = DataInfo(classes=["a", "b", "c"], palette=default_palette(3), input_size=(32, 64))


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_the_kind_and_stride_round_trip(kind):
    stride = 8 if kind.startswith("native") else 1
    info = DataInfo(**{**INFO.__dict__, "output": kind, "output_stride": stride})
    back = DataInfo.from_json(info.to_json())
    assert back == info and (back.output, back.output_stride) == (kind, stride)
    assert output_of(back, "labels" in kind) == (kind, stride)


def test_a_block_without_the_kind_reads_as_before():
    assert "output" not in INFO.to_dict()  # checkpoints' data blocks are unchanged
    old = DataInfo.from_json(INFO.to_json())
    assert old.output is None
    assert output_of(old, False) == ("full", 1) and output_of(old, True) == ("labels", 1)


def test_unknown_or_impossible_kinds_are_refused_in_one_sentence():
    d = INFO.to_dict()
    with pytest.raises(UserError, match="output 'half'"):
        DataInfo.from_dict({**d, "output": "half"})
    with pytest.raises(UserError, match="stride 4"):
        DataInfo.from_dict({**d, "output": "full", "output_stride": 4})
    with pytest.raises(UserError, match="holds logits"):
        output_of(DataInfo.from_dict({**d, "output": "native-labels", "output_stride": 8}), False)


def _with_kind(path, kind, stride):
    import onnx

    proto = onnx.load(str(path))
    info = DataInfo.from_json({p.key: p.value for p in proto.metadata_props}[ONNX_DATA_KEY])
    info = DataInfo(**{**info.__dict__, "output": kind, "output_stride": stride})
    for p in proto.metadata_props:
        if p.key == ONNX_DATA_KEY:
            p.value = info.to_json()
    onnx.save(proto, str(path))
    return path


def test_backends_report_the_kind(onnx_model):
    with load_backend(onnx_model("old.onnx")) as b:  # no kind recorded: full logits, as before
        assert (b.output, b.output_stride) == ("full", 1)
    with load_backend(onnx_model("oldl.onnx", output="labels")) as b:
        assert (b.output, b.output_stride) == ("labels", 1)
    path = _with_kind(onnx_model("n.onnx", stride=1, output="labels"), "native-labels", 2)
    with load_backend(path) as b:
        assert (b.output, b.output_stride) == ("native-labels", 2)
    bad = _with_kind(onnx_model("bad.onnx"), "native-labels", 2)  # says labels, outputs logits
    with pytest.raises(UserError, match="re-export"):
        load_backend(bad)


def test_the_openvino_backend_reports_the_kind(onnx_model):
    pytest.importorskip("openvino")
    path = _with_kind(onnx_model("n.onnx", stride=1), "native", 2)
    with load_backend(path, "openvino") as b:
        assert (b.output, b.output_stride) == ("native", 2)


def test_bench_select_and_jetson_bench_rows_name_the_output(onnx_model, tmp_path):
    """Every latency table says which output kind (and stride) it timed: a native-labels model at stride 2
    is not comparable with a full-logits one without it."""
    from runtime.bench import bench_model
    from runtime.jetson_bench import bench_engine
    from runtime.select import Candidate, measure

    path = _with_kind(onnx_model("n.onnx", stride=1, output="labels"), "native-labels", 2)
    assert bench_model(str(path), warmup=0, iters=1)["output"] == "native-labels (1/2)"
    (row,) = measure(Candidate(str(path), "onnxruntime", "cpu", {}), [], None, "val", None, 0, 1, None, score=False)
    assert row["output"] == "native-labels (1/2)"
    assert bench_engine(str(path), 0.01, 0, None)["output"] == "native-labels (1/2)"
    with load_backend(onnx_model("old.onnx")) as b:
        assert b.output_text == "full"


def test_latency_tables_add_the_hosts_work_from_each_kind_to_labels(onnx_model, monkeypatch):
    """runtime.measure.time_postprocess brings the backend's own output, by its kind, to labels at the asked
    size; select's frame latency is the model call plus that (so native logits, whose upsampling is left to
    the host, are not timed as if it were free)."""
    import runtime.measure as measure_mod
    from runtime.preprocess import dummy_batch
    from runtime.select import Candidate, measure

    seen = []
    real = measure_mod.labels_from_output

    def spy(out, size, kind):
        seen.append((out.shape, size, kind))
        return real(out, size, kind)

    monkeypatch.setattr(measure_mod, "labels_from_output", spy)
    path = _with_kind(onnx_model("n.onnx", stride=1, output="labels"), "native-labels", 2)
    with load_backend(path) as b:
        x = dummy_batch(b.info, b.input_size)
        ms = measure_mod.time_postprocess(b, x, (64, 128), iters=3)
        assert len(ms) == 3 and all(m >= 0 for m in ms)
        assert seen == [(b.infer(x).shape, (64, 128), "native-labels")] * 3
    (row,) = measure(Candidate(str(path), "onnxruntime", "cpu", {}), [], None, "val", None, 0, 4, None, score=False)
    assert row["post_ms"] >= 0 and len(row["ms"]) == 4 and min(row["ms"]) >= row["post_ms"]
