from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.datasets.cityscapes import CLASSES as CS_CLASSES
from runtime.metrics import ConfusionMatrix


def random_pair(k: int, shape: tuple[int, ...], seed: int, ignore_frac: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Predictions that agree with the target 60% of the time, and targets with ignore (255) pixels."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, k, shape)).astype(np.uint8)
    target[rng.random(shape) < ignore_frac] = 255
    return pred, target


def test_hand_worked_2x3():
    # target  0 0 1      pred  0 1 1
    #         2 2 255          2 0 0
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1, 1], [2, 0, 0]]), np.array([[0, 0, 1], [2, 2, 255]]))
    assert cm.mat.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    r = cm.compute(["a", "b", "c"])
    # IoU: a = 1 / (2 + 2 - 1) = 1/3, b = 1 / (1 + 2 - 1) = 1/2, c = 1 / (2 + 1 - 1) = 1/2
    assert r["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 1 / 2, "c": 1 / 2})
    assert r["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert r["pixel_acc"] == pytest.approx(3 / 5)  # the ignore pixel is not counted
    assert r["mean_acc"] == pytest.approx((1 / 2 + 1 / 1 + 1 / 2) / 3)
    assert r["pixels"] == 5


def test_absent_classes_are_nan_and_left_out():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    iou = cm.iou()
    assert iou[:2] == pytest.approx([1 / 2, 2 / 3]) and np.isnan(iou[2:]).all()
    r = cm.compute()
    assert r["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["per_class_iou"]["2"] is None and r["per_class_iou"]["3"] is None
    # a class only predicted (never in the target) has IoU 0 and counts in the mean
    cm.update(np.array([3]), np.array([0]))
    assert cm.iou()[3] == 0.0 and cm.compute()["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    empty = ConfusionMatrix(2).compute()
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["pixel_acc"]) and math.isnan(empty["mean_acc"])


def test_accuracies_hand_checked():
    cm = ConfusionMatrix(3)
    cm.merge(np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]]))
    r = cm.compute()
    assert r["pixel_acc"] == pytest.approx(11 / 14)
    assert r["mean_acc"] == pytest.approx((8 / 10 + 3 / 4) / 2)  # class 2 is absent from the target


def test_batches_accumulate_like_one_update():
    pred, target = random_pair(5, (3, 16, 24), seed=1)
    one, many = ConfusionMatrix(5), ConfusionMatrix(5)
    one.update(pred, target)
    for p, t in zip(pred, target):
        many.update(p, t)
    assert np.array_equal(one.mat, many.mat)
    with pytest.raises(ValueError, match="shape"):
        one.update(pred[0], target)


def test_matches_torchmetrics_jaccard():
    torch = pytest.importorskip("torch")
    from torchmetrics.classification import MulticlassJaccardIndex

    k = 6
    pred, target = random_pair(k, (2, 32, 48), seed=2)
    pred[pred == 5] = 4  # class 5: in the target, never predicted
    target[target == 3] = 255  # class 3: predicted, never in the target (IoU 0)
    cm = ConfusionMatrix(k)
    cm.update(pred, target)
    ref = MulticlassJaccardIndex(num_classes=k, average="none", ignore_index=255)
    expected = ref(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target.astype(np.int64))).numpy()
    assert cm.iou() == pytest.approx(expected, abs=1e-6)
    assert cm.iou()[3] == 0.0 and cm.iou()[5] == 0.0


def test_matches_cityscapesscripts_evaluation(tmp_path):
    """Our trainId confusion matrix gives the per-class IoU and mean of cityscapesscripts' evaluator, run
    on labelId PNG files (gt ignore -> labelId 0 'unlabeled', which it ignores in evaluation)."""
    from PIL import Image

    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    from cityscapesscripts.helpers.labels import trainId2label  # type: ignore[import-untyped]

    to_id = np.zeros(256, np.uint8)
    for t in range(19):
        to_id[t] = trainId2label[t].id
    to_id[255] = 0
    cm = ConfusionMatrix(19)
    preds, gts = [], []
    for i in range(2):
        pred, target = random_pair(19, (24, 40), seed=10 + i)
        pred[pred == 16] = 0  # 'train' never predicted
        target[target == 17] = 255  # 'motorcycle' never in the target
        pred[pred == 18] = 1  # 'bicycle' absent from both: NaN in both, left out of both means
        target[target == 18] = 255
        target[:, :3] = 255
        cm.update(pred, target)
        preds.append(tmp_path / f"p{i}.png")
        gts.append(tmp_path / f"g{i}_gtFine_labelIds.png")
        Image.fromarray(to_id[pred]).save(preds[-1])
        Image.fromarray(to_id[target]).save(gts[-1])
    ev.args.quiet = True
    ev.args.JSONOutput = False
    ev.args.evalInstLevelScore = False
    ev.args.evalPixelAccuracy = False
    result = ev.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts], ev.args)
    ours = cm.compute(CS_CLASSES)
    theirs = result["classScores"]
    assert ours["per_class_iou"]["bicycle"] is None
    for name in CS_CLASSES:
        if ours["per_class_iou"][name] is None:
            assert math.isnan(theirs[name]), name
        else:
            assert ours["per_class_iou"][name] == pytest.approx(theirs[name], abs=1e-9), name
    assert ours["mIoU"] == pytest.approx(result["averageScoreClasses"], abs=1e-9)


def test_prediction_outside_classes_counts_only_as_wrong():
    """A predicted id outside 0..K-1 is wrong for its true class and adds to no other class's union."""
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 255, 2]), np.array([0, 0, 2]))
    iou = cm.iou()
    assert iou[0] == 0.5  # tp 1, union = 2 true pixels of class 0
    assert np.isnan(iou[1])  # class 1 absent from target and prediction
    assert iou[2] == 1.0  # the 255 did not become a class-2 false positive
    assert cm.compute()["pixel_acc"] == 2 / 3
