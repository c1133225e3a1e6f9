"""export.onnx --output full|native|labels|native-labels (issue 23): each kind exports with its kind and
stride in the metadata, matches the PyTorch model the matching way, reaches the runtime backends (ONNX
Runtime and an OpenVINO IR converted from it) and scores alike in runtime.eval at the label's full size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx import main
from export.onnx_graph import export_graph, native_logits
from runtime.backends import load_backend
from runtime.datasets import SegmentationDataset, build_dataset
from runtime.datasets.synthetic import CLASSES
from runtime.measure import evaluate
from runtime.metadata import ONNX_DATA_KEY, OUTPUT_KINDS, DataInfo, default_palette
from runtime.preprocess import preprocess_for
from train.engine.checkpoint import save_checkpoint
from train.models import build_model

SIZE = (64, 128)
K = len(CLASSES)
SYNTHETIC = {"num_train": 4, "num_val": 2, "size": list(SIZE), "seed": 0, "difficulty": 1.0, "cache": False}
NAMES = {"full": "m.onnx", "labels": "m.labels.onnx", "native": "m.native.onnx",
         "native-labels": "m.native.labels.onnx"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random-weight checkpoint exported once per kind at 64x128 -> (dir, model, info, reports)."""
    tmp = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    model = build_model({"recipe": "tiny_deeplabv3_resnet10t"}, K)
    info = DataInfo(classes=list(CLASSES), palette=default_palette(K), input_size=SIZE,
                    extra={"synthetic": {**SYNTHETIC, "num_val": 1}})
    config = {"data": {"dataset": "synthetic", "synthetic": SYNTHETIC}}
    ckpt = save_checkpoint(tmp / "m.pt", model, info, {"method": "baseline", "config": config})
    reports = {}
    for kind in OUTPUT_KINDS:
        assert main(["--checkpoint", str(ckpt), "--output", kind, "--parity-images", "2"]) == 0
        assert (tmp / NAMES[kind]).is_file()  # the default name tells the kind
        reports[kind] = json.loads((tmp / f"{NAMES[kind]}.export.json").read_text())
    return tmp, model.eval(), info, reports


def _frames(n: int = 2) -> list[np.ndarray]:
    ds = build_dataset("synthetic", "val", **{**SYNTHETIC, "size": SIZE})
    return [ds[i][0] for i in range(n)]


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"images": x})[0]


def _native(model, x):
    with torch.no_grad():
        return native_logits(model, torch.from_numpy(x)).numpy()


def test_each_kind_records_its_kind_and_stride(exported):
    tmp, model, _, reports = exported
    stride = int(model.stride)
    assert stride > 1
    for kind in OUTPUT_KINDS:
        proto = onnx.load(str(tmp / NAMES[kind]))
        data = DataInfo.from_json({p.key: p.value for p in proto.metadata_props}[ONNX_DATA_KEY])
        native = kind.startswith("native")
        assert data.output == kind and data.output_stride == (stride if native else 1)
        assert [o.name for o in proto.graph.output] == ["labels" if "labels" in kind else "logits"]
        h, w = (SIZE[0] // stride, SIZE[1] // stride) if native else SIZE
        dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
        assert dims == ([1, h, w] if "labels" in kind else [1, K, h, w])
        assert not any(n.op_type == "Resize" for n in proto.graph.node) or not native  # no final upsampling
        rep = reports[kind]
        assert rep["source"]["options"]["output"] == kind and rep["written"]
        assert rep["parity"]["argmax_agreement"] > 0.999
        if kind == "native-labels":
            assert rep["parity"]["mismatches_outside_ties"] == 0
        with load_backend(tmp / NAMES[kind]) as b:  # the backend reports the kind: callers need no guessing
            assert (b.output, b.output_stride) == (kind, data.output_stride)


def test_native_logits_equal_the_models_native_logits(exported):
    tmp, model, info, _ = exported
    x = preprocess_for(info, _frames(1), SIZE)
    got, ref = _ort(tmp / NAMES["native"], x), _native(model, x)
    assert got.shape == ref.shape and got.shape[2:] != SIZE
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_native_labels_equal_the_argmax_of_the_native_logits_exactly(exported):
    tmp, model, info, _ = exported
    x = preprocess_for(info, _frames(2), SIZE)
    ref = _native(model, x)
    top2 = np.sort(ref, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-4  # no near-tie on these frames: equality must be exact
    labels = np.concatenate([_ort(tmp / NAMES["native-labels"], x[i:i + 1]) for i in range(2)])
    assert labels.dtype == np.uint8 and labels.shape == (2, *ref.shape[2:])
    np.testing.assert_array_equal(labels, ref.argmax(1))


def test_argmax_is_an_alias_of_output_labels_and_contradictions_are_refused(exported, capsys):
    tmp, *_ = exported
    out = tmp / "alias.onnx"
    assert main(["--checkpoint", str(tmp / "m.pt"), "--argmax", "--out", str(out), "--parity-images", "1"]) == 0
    assert "deprecated" in capsys.readouterr().err
    with load_backend(out) as b:
        assert b.output == "labels" and b.output_kind == "labels"
    assert main(["--checkpoint", str(tmp / "m.pt"), "--argmax", "--output", "native"]) == 2
    assert "--argmax" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp / "m.pt"), "--output", "half"])


def test_a_model_without_native_logits_is_refused_in_one_sentence(tmp_path):
    from torch import nn

    from runtime.errors import UserError

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def segment(self, x):
            return self.conv(x)

    info = DataInfo(classes=["a", "b"], palette=default_palette(2))
    with pytest.raises(UserError, match="no logits at its own stride"):
        export_graph(Plain(), info, tmp_path / "p.onnx", size=(8, 8), output="native")


def test_dynamic_native_export_runs_at_two_sizes(exported, tmp_path):
    tmp, model, info, _ = exported
    out = tmp_path / "dyn.native.onnx"
    export_graph(model, info, out, size=SIZE, dynamic=True, output="native")
    for size in [(64, 128), (96, 160)]:
        x = preprocess_for(info, _frames(1), size)
        np.testing.assert_allclose(_ort(out, x), _native(model, x), atol=1e-4, rtol=1e-4)


class _Samples(SegmentationDataset):
    def __init__(self, samples):
        super().__init__(None, "val")
        self.samples = samples
        self.classes = list(CLASSES)
        self.palette = default_palette(K)
        self.items = [(None, None, str(i)) for i in range(len(samples))]

    def load(self, i):
        return (*self.samples[i], str(i))


def _labelled(frames, size, tmp_model, info):
    """Frames with labels at `size`: the full model's own labels there, corrupted a little, some ignored."""
    rng = np.random.default_rng(1)
    out = []
    with load_backend(tmp_model) as b:
        for f in frames:
            label = b.infer(preprocess_for(info, f, SIZE))[0].argmax(0).astype(np.uint8)
            import cv2

            label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
            flip = rng.random(label.shape) < 0.2
            label[flip] = rng.integers(0, K, int(flip.sum()))
            label[:3] = 255
            out.append((f, label))
    return out


def test_eval_scores_every_kind_at_the_labels_full_size(exported, capsys):
    """full, labels and native give the same mIoU (one definition: bilinear logits then arg-max); native
    labels (nearest) are reported, close; the confusion matrix counts every label pixel, at the label's size."""
    tmp, _, info, _ = exported
    frames = _frames(2)
    ds = _Samples(_labelled(frames, SIZE, tmp / NAMES["full"], info))
    results = {}
    for kind in OUTPUT_KINDS:
        with load_backend(tmp / NAMES[kind]) as b:
            results[kind] = evaluate(b, ds)
    counted = int(sum(np.sum(r) for r in results["full"]["confusion_matrix"]))
    assert counted == sum(int((lab != 255).sum()) for _, lab in ds.samples)
    full = results["full"]["mIoU"]
    assert results["labels"]["mIoU"] == pytest.approx(full, abs=1e-6)
    assert results["native"]["mIoU"] == pytest.approx(full, abs=1e-3)  # ORT vs OpenCV rounding at ties only
    assert abs(results["native-labels"]["mIoU"] - full) < 0.1 and results["native-labels"]["images"] == 2
    # labels twice the input size: the prediction is upsampled, the ground truth is never downsampled
    big = (2 * SIZE[0], 2 * SIZE[1])
    ds_big = _Samples(_labelled(frames, big, tmp / NAMES["full"], info))
    for kind in ("full", "native-labels"):
        with load_backend(tmp / NAMES[kind]) as b:
            cm = np.asarray(evaluate(b, ds_big)["confusion_matrix"])
        assert int(cm.sum()) == sum(int((lab != 255).sum()) for _, lab in ds_big.samples)
        assert int(cm.sum()) > 2 * SIZE[0] * SIZE[1]


def test_runtime_eval_cli_reports_the_kind(exported, tmp_path, capsys):
    import runtime.eval as ev

    tmp, *_ = exported
    dest = tmp_path / "e.json"
    assert ev.main(["--model", str(tmp / NAMES["native-labels"]), "--data", "synthetic", "--max-images", "1",
                    "--json", str(dest)]) == 0
    rep = json.loads(dest.read_text())
    assert rep["output"] == "native-labels" and rep["output_stride"] > 1 and rep["images"] == 1
    assert "native-labels output" in capsys.readouterr().err


def test_the_openvino_ir_carries_the_kind(exported, tmp_path):
    pytest.importorskip("openvino")
    from export.openvino import convert
    from runtime.backends.openvino_backend import core, read_data_info

    tmp, *_ = exported
    for kind in ("native", "native-labels"):
        xml = tmp_path / f"{kind}.openvino.xml"
        convert(tmp / NAMES[kind], xml, frames=1)
        data = read_data_info(core().read_model(str(xml)))
        assert data is not None and data.output == kind and data.output_stride > 1
        with load_backend(xml) as b:
            assert b.name == "openvino" and b.output == kind


def test_the_command_defaults_to_native_labels(exported, tmp_path):
    """Without --output the command exports native-labels (the measured fastest kind), under its own default
    name; the Python function keeps full logits (what a teacher or a parity check needs)."""
    from export.onnx import DEFAULT_OUTPUT

    tmp = exported[0]
    out = tmp_path / "d.onnx"
    assert DEFAULT_OUTPUT == "native-labels"
    assert main(["--checkpoint", str(tmp / "m.pt"), "--out", str(out), "--parity-images", "1"]) == 0
    with load_backend(out) as b, load_backend(tmp / NAMES["native-labels"]) as ref:
        assert (b.output, b.output_kind) == ("native-labels", "labels")
        assert b.output_stride == ref.output_stride > 1
