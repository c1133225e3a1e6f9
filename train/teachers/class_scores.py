"""Per-class IoU of a model (typically the teacher) as a compact console table, and a warning naming the
classes it never gets right: a teacher at 0 IoU on a class has nothing to teach the student about it.

`per_class` is `runtime.metrics.ConfusionMatrix.compute()["per_class_iou"]`: class name -> IoU in [0, 1],
or None for a class absent from both the labels and the predictions (it has no score, and is left out
of the count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def zero_iou_classes(per_class: Mapping[str, float | None]) -> list[str]:
    """The classes scored exactly 0 IoU (no pixel of them predicted right), in class order."""
    return [name for name, v in per_class.items() if v is not None and v == 0.0]


def class_iou_table(per_class: Mapping[str, float | None], columns: int = 4) -> str:
    """'name  IoU %' cells, `columns` to a line; '-' for a class with no score."""
    if not per_class:
        return "  (no classes)"
    width = max(len(n) for n in per_class)
    cells = [f"{name:<{width}} {'-' if v is None else f'{100 * v:.1f}':>5}" for name, v in per_class.items()]
    cols = max(1, columns)
    return "\n".join("  " + "   ".join(cells[i:i + cols]) for i in range(0, len(cells), cols))


def zero_iou_warning(per_class: Mapping[str, float | None], who: str = "teacher") -> str | None:
    """One sentence naming the classes at 0 IoU, or None when every scored class is above 0."""
    zero = zero_iou_classes(per_class)
    if not zero:
        return None
    scored = sum(v is not None for v in per_class.values())
    return (f"warning: the {who} scores 0 IoU on {', '.join(zero)} ({len(zero)} of {scored} classes): "
            f"distillation cannot teach them; train the {who} longer (a larger train.budget) or check that "
            f"its training data holds these classes before distilling")


def class_iou_report(per_class: Mapping[str, float | None], title: str, who: str = "teacher") -> str:
    """`title`, the per-class table and, when a class is at 0 IoU, the warning line."""
    warning = zero_iou_warning(per_class, who)
    return "\n".join([title, class_iou_table(per_class), *([warning] if warning else [])])


def checkpoint_class_report(ckpt: Mapping[str, Any] | None, who: str = "teacher") -> str | None:
    """The report of the per-class IoU a checkpoint's training recorded (`train.val_per_class_iou`, of the
    validation it was saved after), or None when it recorded none (no validation, an older checkpoint)."""
    train = (ckpt or {}).get("train") or {}
    per_class = train.get("val_per_class_iou")
    if not per_class:
        return None
    return class_iou_report(per_class, f"{who} per-class val IoU % (recorded by its training, at iteration "
                                       f"{train.get('iterations')}):", who)
