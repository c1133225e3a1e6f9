"""What every measuring command shares: latency percentiles, console/Markdown tables, atomic JSON reports
(with the environment block of runtime.machine) and the latency-accuracy scatter plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io import atomic_write_json
from runtime.machine import environment


# --- latency ---------------------------------------------------------------------------------
def latency_summary(ms: Sequence[float], batch: int = 1) -> dict[str, float | int]:
    """p50/p90/p99/mean/min/max of per-call milliseconds and FPS = batch * 1000 / mean ms."""
    if len(ms) == 0:
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan"),
                "min": float("nan"), "max": float("nan"), "fps": float("nan")}
    a = np.asarray(ms, np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean,
            "min": float(a.min()), "max": float(a.max()), "fps": batch * 1000.0 / mean if mean > 0 else float("inf")}


# --- tables ----------------------------------------------------------------------------------
def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], markdown: bool = False,
                 digits: int = 2, headers: Sequence[str] | None = None) -> str:
    """Rows of dicts -> an aligned console table, or a GitHub Markdown table with `markdown=True`."""
    heads = list(headers or columns)
    cells = [[_cell(r.get(c), digits) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(row) for row in cells])


def write_report(path: str | Path, report: dict[str, Any], threads: int | None = None) -> Path:
    """Write `report` plus an `environment` block as JSON, atomically; returns the path."""
    body = dict(report)
    body.setdefault("environment", environment(threads))
    return atomic_write_json(path, body)


# --- plots -----------------------------------------------------------------------------------
def latency_plot(path: str | Path, points: Sequence[tuple[float, float, str, str]],
                 draw: Callable[[Any], None] | None = None, size: tuple[float, float] = (6, 4),
                 scored: bool = True) -> str | None:
    """Save a PNG of mIoU % (y) against p50 latency in ms (x, log): one labelled dot per
    (latency, miou, label, colour) point, then `draw(ax)` for extras (lines, legend). Returns a note
    instead of writing when there is no point (`scored`: whether the command was given --data to score
    on) or matplotlib is missing."""
    if not points:
        return ("no plot: nothing was both timed and scored (see the status column)" if scored
                else "no plot: pass --data to score mIoU")
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.io import atomic_write

    fig, ax = plt.subplots(figsize=size, dpi=120)
    for x, y, label, colour in points:
        ax.scatter(x, y, s=18, color=colour)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per batch (ms, log)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(True, which="both", alpha=0.3)
    if draw is not None:
        draw(ax)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return None
