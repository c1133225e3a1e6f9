from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import runtime.eval as ev
import runtime.measure as measure
from runtime.backends import load_backend
from runtime.datasets import DataSpec, SegmentationDataset
from runtime.errors import UserError
from runtime.metadata import DataInfo, default_palette
from runtime.preprocess import preprocess_for


class ListDataset(SegmentationDataset):
    def __init__(self, samples, k):
        super().__init__(None, "val")
        self.samples = samples
        self.classes = [f"c{i}" for i in range(k)]
        self.palette = default_palette(k)
        self.items = [(None, None, str(i)) for i in range(len(samples))]

    def load(self, i):
        image, label = self.samples[i]
        return image, label, str(i)


def _dataset(k=4, n=3, size=(48, 80)):
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(n):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        label = rng.integers(0, k, size, dtype=np.uint8)
        label[:4] = 255
        samples.append((image, label))
    return ListDataset(samples, k)


def _miou_by_hand(preds, labels, k):
    p = np.concatenate([x.ravel() for x in preds]).astype(int)
    t = np.concatenate([x.ravel() for x in labels]).astype(int)
    keep = t != 255
    p, t = p[keep], t[keep]
    ious = []
    for c in range(k):
        union = np.sum((p == c) | (t == c))
        if union:
            ious.append(np.sum((p == c) & (t == c)) / union)
    return float(np.mean(ious)), float(np.mean(p == t))


@pytest.mark.parametrize("output", ["logits", "labels"])
def test_evaluate_equals_metrics_on_same_predictions(onnx_model, output):
    ds = _dataset()
    with load_backend(onnx_model(output=output)) as b:
        res = measure.evaluate(b, ds)
        preds = []
        for image, label in ds.samples:
            out = b.infer(preprocess_for(b.info, image))
            if output == "logits":  # upsample logits bilinearly to the label size, then argmax
                up = cv2.resize(out[0].transpose(1, 2, 0), (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
                preds.append(up.argmax(-1))
            else:
                preds.append(cv2.resize(out[0], (label.shape[1], label.shape[0]), interpolation=cv2.INTER_NEAREST_EXACT))
    miou, acc = _miou_by_hand(preds, [lb for _, lb in ds.samples], 4)
    assert res["mIoU"] == pytest.approx(miou) and res["pixel_acc"] == pytest.approx(acc)
    assert res["images"] == 3 and set(res["per_class_iou"]) == {"c0", "c1", "c2", "c3"}


def test_class_count_mismatch(onnx_model):
    with load_backend(onnx_model(k=3)) as b, pytest.raises(UserError, match="3 classes"):
        measure.evaluate(b, _dataset(k=4))


def test_synthetic_parameters_come_from_the_model():
    info = DataInfo(classes=["x"], palette=[(0, 0, 0)],
                    extra={"synthetic": {"size": [32, 64], "num_val": 3, "seed": 5, "cache": False, "unknown": 1}})
    ds = DataSpec.for_model(info, "synthetic").open("val")
    assert len(ds) == 3 and ds.size == (32, 64) and ds.seed == 5 and ds.cache_dir is None
    assert ds[0][0].shape == (32, 64, 3)


def test_cli_on_synthetic_writes_json(onnx_model, tmp_path, capsys):
    extra = {"synthetic": {"size": [32, 64], "num_val": 2, "cache": False}}
    model = onnx_model(classes="synthetic", size=(32, 64), extra=extra)
    js = tmp_path / "e.json"
    assert ev.main(["--model", str(model), "--data", "synthetic", "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    assert report["images"] == 2 and 0 <= report["mIoU"] <= 1 and len(report["per_class_iou"]) == 16
    assert np.array(report["confusion_matrix"]).sum() == report["pixels"] and "environment" in report
    assert "mIoU" in capsys.readouterr().out


def test_cli_with_several_models_writes_one_json_each_and_a_summary(onnx_model, tmp_path, capsys):
    extra = {"synthetic": {"size": [32, 64], "num_val": 2, "cache": False}}
    a = onnx_model(classes="synthetic", size=(32, 64), extra=extra)
    b = tmp_path / "copy.onnx"
    b.write_bytes(a.read_bytes())
    out = tmp_path / "eval"
    assert ev.main(["--model", str(a), str(b), "--data", "synthetic", "--out", str(out)]) == 0
    one, two = (json.loads((out / f"{p.name}.json").read_text()) for p in (a, b))
    assert one["mIoU"] == two["mIoU"]  # the same model scores the same
    summary = json.loads((out / "summary.json").read_text())
    assert [r["model"] for r in summary["models"]] == [a.name, b.name]
    assert summary["models"][0]["mIoU"] == 100 * one["mIoU"]
    assert (out / "summary.md").read_text().startswith("|")
    assert ev.main(["--model", str(a), str(b), "--json", str(tmp_path / "x.json")]) == 2  # one file, two models


def test_class_names_that_differ_are_refused_unless_forced(onnx_model):
    ds = _dataset(k=4)
    ds.classes = ["road", "car", "sky", "tree"]
    with load_backend(onnx_model(k=4)) as b:
        with pytest.raises(UserError, match=r"predicts the classes \[c0, c1, c2, c3\] but the dataset names "
                                            r"\[road, car, sky, tree\].*--force-classes"):
            measure.evaluate(b, ds)
        assert measure.evaluate(b, ds, force_classes=True)["images"] == 3


def test_skip_bad_leaves_corrupt_samples_out_and_lists_them(onnx_model):
    from runtime.datasets.base import BadSample

    class Flaky(ListDataset):
        def load(self, i):
            if i == 1:
                raise BadSample("label 1.png is corrupt")
            return super().load(i)

    ds = _dataset(k=4)
    flaky = Flaky(ds.samples, 4)
    with load_backend(onnx_model(k=4)) as b:
        with pytest.raises(BadSample):
            measure.evaluate(b, flaky)
        flaky.skip_bad = True
        result = measure.evaluate(b, flaky)
        only_good = measure.evaluate(b, ListDataset([ds.samples[0], ds.samples[2]], 4))
    assert result["images"] == 2 and result["skipped"] == ["label 1.png is corrupt"]
    assert result["confusion_matrix"] == only_good["confusion_matrix"]  # left out, not replaced


def test_unwritable_json_fails_before_scoring(onnx_model, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert ev.main(["--model", str(onnx_model()), "--json", str(blocker / "e.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot write --json file" in err and "images" not in err  # nothing was scored


def test_a_model_that_cannot_be_read_is_a_permission_error(onnx_model, monkeypatch, capsys):
    import os

    model = onnx_model()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(model) else real_access(p, mode))
    assert ev.main(["--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "permission denied reading model" in err and "corrupt" not in err


def test_cli_names_its_own_skip_option_for_a_corrupt_sample(onnx_model, tmp_path, capsys):
    """The reader used to say "pass skip_bad", which is no option of runtime.eval (its flag is --skip-bad)."""
    from runtime.datasets.folder import write_classes_yaml, write_sample

    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    for name in ("a", "b"):
        write_sample(root, "val", name, rng.integers(0, 256, (16, 32, 3), dtype=np.uint8), np.zeros((16, 32), np.uint8))
    write_classes_yaml(root, [f"c{i}" for i in range(4)], default_palette(4))
    (root / "images" / "val" / "a.png").write_bytes(b"not a png")
    args = ["--model", str(onnx_model(k=4)), "--data", f"folder:{root}"]
    assert ev.main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: image ") and err.endswith("a.png is corrupt or not an image; replace it, or pass "
                                                             "--skip-bad to skip it")
    assert ev.main([*args, "--skip-bad"]) == 0


def test_a_static_model_given_another_size_is_told_to_drop_size(onnx_model, capsys):
    """It used to be told to "resize with runtime.preprocess", which the command already does."""
    model = onnx_model(size=(64, 128))
    assert ev.main(["--model", str(model), "--size", "32x64"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == ("error: m.onnx has a static 64x128 input and runs only at that size; drop --size 32x64 (or "
                   "export the model with --dynamic)")
    with load_backend(model) as b:
        assert b.run_size(None) == b.run_size((64, 128)) == (64, 128)
    with load_backend(onnx_model("d.onnx", dynamic=True)) as b:
        assert b.static_size is None and b.run_size((32, 64)) == (32, 64)
