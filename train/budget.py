"""Wall-clock budgets resolved to iteration counts before training, so that results do not depend on load.

A user states a budget in seconds (`budget=3m`). A probe (`Trainer.probe`) times a few real training
steps of the method after a warm-up; their median is the method's seconds per iteration, and

    iterations = max(1, floor(seconds / s_per_iter))

is what the run then trains for, exactly. Recording the probe and the count makes the run reproducible
on any machine (`train.iterations=N`, or `train.compare --resolved compare.json`). A teacher cache's
one-off build time can be charged to the budget first (`charge_cache`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def resolve_iterations(seconds: float, s_per_iter: float) -> int:
    """`max(1, floor(seconds / s_per_iter))`; at least one iteration, whatever the probe says."""
    if not s_per_iter > 0 or not math.isfinite(s_per_iter):
        raise ValueError(f"seconds per iteration must be a positive number, got {s_per_iter!r}")
    return max(1, math.floor(max(0.0, seconds) / s_per_iter + 1e-9))


def charge_cache(seconds: float, cache_seconds: float, runs_sharing: int) -> float:
    """The training seconds left to one run when a cache build of `cache_seconds` is shared by
    `runs_sharing` runs (1: charged in full to each run)."""
    return seconds - cache_seconds / max(1, runs_sharing)


def probe_record(times: Sequence[float], warmup: int, method: str, env: dict[str, Any]) -> dict[str, Any]:
    """What a probe reports: the median of the timed steps is the method's seconds per iteration."""
    if not times:
        raise ValueError("a probe needs at least one timed step")
    return {"method": method, "s_per_iter": statistics.median(times), "step_seconds": [float(t) for t in times],
            "warmup_steps": int(warmup), "timed_steps": len(times), "device": env.get("device"),
            "threads": env.get("torch_threads", env.get("threads")), "env": env}
