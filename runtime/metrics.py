"""Segmentation metrics from one confusion matrix accumulated over a whole dataset.

`M[t, p]` counts pixels of true class t predicted as p (pixels whose target is the ignore index, or
outside 0..K-1, are skipped). A predicted id outside 0..K-1 is wrong for its true class and counts for no
other class (as in cityscapesscripts): it is kept in `outside[t]`, which adds to class t's union.
IoU_k = M_kk / (sum_p M_kp + outside_k + sum_t M_tk - M_kk); mIoU averages IoU over
classes whose union is non-zero (as cityscapesscripts and mmseg do: classes absent from both target and
prediction are NaN and left out). Pixel accuracy = trace / total; mean class accuracy averages
M_kk / sum_p M_kp over classes present in the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.metadata import IGNORE_INDEX


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.outside = np.zeros(num_classes, dtype=np.int64)  # per true class: predictions outside 0..K-1

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add a batch: `pred` and `target` integer arrays of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        k = self.num_classes
        t = target.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        valid = (t != self.ignore_index) & (t >= 0) & (t < k)
        t, p = t[valid], p[valid]
        inside = (p >= 0) & (p < k)
        self.mat += np.bincount(t[inside] * k + p[inside], minlength=k * k).reshape(k, k)
        self.outside += np.bincount(t[~inside], minlength=k)

    def merge(self, other: ConfusionMatrix | np.ndarray) -> None:
        if isinstance(other, ConfusionMatrix):
            self.mat += other.mat
            self.outside += other.outside
        else:
            self.mat += other

    def reset(self) -> None:
        self.mat[:] = 0
        self.outside[:] = 0

    def iou(self) -> np.ndarray:
        """Per-class IoU, NaN where the class is absent from both target and prediction."""
        m = self.mat.astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) + self.outside - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        m = self.mat.astype(np.float64)
        iou = self.iou()
        gt = m.sum(1) + self.outside
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(gt > 0, np.diag(m) / gt, np.nan)
        total = m.sum() + self.outside.sum()
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
            "pixel_acc": float(np.trace(m) / total) if total else float("nan"),
            "mean_acc": float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan"),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
            "pixels": int(total),
        }
