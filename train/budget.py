"""Wall-clock budgets resolved to iteration counts before training, so that results do not depend on load.

A user states a budget in seconds (`budget=3m`). A probe (`Trainer.probe`) times a few real training
steps of the method after a warm-up; their median is the method's seconds per iteration, and

    iterations = max(1, floor(seconds / s_per_iter))

is what the run then trains for, exactly. Recording the probe and the count makes the run reproducible
on any machine (`train.iterations=N`, or `train.compare --resolved compare.json`). A teacher cache's
one-off build time can be charged to the budget first (`charge_cache`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from train.config import Config
    from train.distributed import DistEnv
    from train.engine import Trainer


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


def resolve_budget(cfg: Config, trainer: Trainer, env: DistEnv, run_dir: Path) -> dict[str, Any] | None:
    """With `train.budget_mode=probe` and a wall-clock budget: the probe record, after setting
    `cfg.train.iterations` (and the trainer's budget) to the count it resolves to. A resumed run reuses the
    probe it recorded in `<run>/probe.json`, so that it finishes the same count."""
    import torch

    from runtime.io import atomic_write_json
    from train.config import Budget, parse_budget
    from train.distributed import broadcast_

    budget = parse_budget(cfg.train.budget)
    if not budget.is_time or cfg.train.budget_mode != "probe" or cfg.train.iterations is not None:
        return None
    path = run_dir / "probe.json"
    if cfg.train.resume and path.is_file() and (run_dir / "last.pt").is_file():
        record = json.loads(path.read_text())
    else:
        record = trainer.probe(cfg.train.probe_warmup, cfg.train.probe_steps)
    n = torch.tensor([resolve_iterations(float(budget.seconds or 0), record["s_per_iter"])], dtype=torch.float64)
    n = broadcast_(n.to(env.device), 0)  # rank 0's probe decides for every rank
    record["iterations"] = int(n.item())
    record["budget_seconds"] = float(budget.seconds or 0)
    cfg.train.iterations = record["iterations"]
    trainer.budget = Budget(iterations=record["iterations"])
    if env.is_main:
        atomic_write_json(path, record)
    print(f"[probe] {trainer.method}: {record['s_per_iter']:.3f} s/iter (median of {record['timed_steps']} steps) "
          f"-> {record['iterations']} iterations for {budget}", flush=True)
    return record
