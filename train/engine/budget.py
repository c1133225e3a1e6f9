"""Training budgets: what a user states, and the iteration count it resolves to before training, so that
results do not depend on load.

A budget is a number of iterations (`budget=2000`) or of wall-clock seconds (`budget=3m`, `parse_budget`).
For seconds, a probe (a callable; in training `Trainer.probe`) times a few real training
steps of the method after a warm-up; their median is the method's seconds per iteration, and

    iterations = max(1, floor(seconds / s_per_iter))

is what the run then trains for, exactly. Recording the probe and the count makes the run reproducible
on any machine (`train.iterations=N`, or `train.compare --resolved compare.json`). A teacher cache's
one-off build time can be charged to the budget first (`charge_cache`).

A comparison measures its methods against each other (`interleaved_costs`): every method's steps in
one process, in rounds whose order rotates, so that a slow spell of a shared machine falls on all
methods alike; per round r the cost ratio to the reference method is

    ρ_m,r = mean step seconds of m in round r / mean step seconds of the reference in round r,

and rounds continue until the 95 % interval of the mean ratio, ρ̄_m ± t_{0.975, n−1} · s(ρ_m) / √n, is
within ±`tolerance` of ρ̄_m for every method (or the round or time cap is reached: the interval is
reported either way). Each method's seconds per iteration is then ρ̄_m times the reference's median step.

A budget can also be matched in counted FLOPs (`train.compare --match flops`), which no machine or load
changes: one real training step of each method runs under torch's FlopCounterMode (train/models/flops.py:
2 FLOPs per multiply-add of every matrix product and convolution, forward and backward, the online
teacher's forward included; element-wise ops, data loading and cache reads are not counted). A budget of N
reference iterations is F = N · f_ref FLOPs, and a method with step cost f_m and a cache build of C FLOPs
shared by R runs trains for

    iterations_m = max(1, floor((F − C / R) / f_m)).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import UserError

if TYPE_CHECKING:  # budget is below config: config validates its budgets with parse_budget
    from train.config import Config
    from train.engine.distributed import DistEnv


@dataclass(frozen=True)
class Budget:
    """Either a number of iterations or a number of wall-clock seconds."""

    iterations: int | None = None
    seconds: float | None = None

    @property
    def is_time(self) -> bool:
        return self.seconds is not None

    def __str__(self) -> str:
        return f"{self.seconds:g}s" if self.is_time else f"{self.iterations} iterations"


_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|it|iter|iters)?\s*$", re.IGNORECASE)


def parse_budget(text: str | int | float) -> Budget:
    """`"40000"` -> 40000 iterations; `"90s"`, `"30m"`, `"2h"` -> seconds."""
    m = _BUDGET_RE.match(str(text))
    if not m:
        raise UserError(f"budget '{text}' does not parse; use iterations (40000) or wall-clock (90s, 30m, 2h)")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if unit in ("", "it", "iter", "iters"):
        if value != int(value):
            raise UserError(f"budget '{text}': an iteration count must be a whole number (40000)")
        return Budget(iterations=int(value))
    return Budget(seconds=value * {"s": 1, "m": 60, "h": 3600}[unit])


def resolve_iterations(seconds: float, s_per_iter: float) -> int:
    """`max(1, floor(seconds / s_per_iter))`; at least one iteration, whatever the probe says."""
    if not s_per_iter > 0 or not math.isfinite(s_per_iter):
        raise ValueError(f"seconds per iteration must be a positive number, got {s_per_iter!r}")
    return max(1, math.floor(max(0.0, seconds) / s_per_iter + 1e-9))


def charge_cache(seconds: float, cache_seconds: float, runs_sharing: int) -> float:
    """The training seconds left to one run when a cache build of `cache_seconds` is shared by
    `runs_sharing` runs (1: charged in full to each run)."""
    return seconds - cache_seconds / max(1, runs_sharing)


def resolve_counts(probes: dict[str, float], seconds: float, cache_seconds: float, cached: Sequence[str],
                   runs_sharing: int) -> dict[str, dict[str, int]]:
    """Iterations per method from probed s/iter: `amortised` charges each run that reads the cache
    `cache_seconds / runs_sharing`, `charged` the whole build (methods in `cached` only)."""
    out = {}
    for m, s_per_iter in probes.items():
        uses = m in cached
        rec = {"amortised": resolve_iterations(charge_cache(seconds, cache_seconds if uses else 0.0, runs_sharing),
                                               s_per_iter)}
        if uses:
            rec["charged"] = resolve_iterations(charge_cache(seconds, cache_seconds, 1), s_per_iter)
        out[m] = rec
    return out


def probe_record(times: Sequence[float], warmup: int, method: str, env: dict[str, Any]) -> dict[str, Any]:
    """What a probe reports: the median of the timed steps is the method's seconds per iteration."""
    if not times:
        raise ValueError("a probe needs at least one timed step")
    return {"method": method, "s_per_iter": statistics.median(times), "step_seconds": [float(t) for t in times],
            "warmup_steps": int(warmup), "timed_steps": len(times), "device": env.get("device"),
            "threads": env.get("torch_threads", env.get("threads")), "env": env}


# t_{0.975, df} for df = 1..30 (two-sided 95 %); above 30 the normal 1.96 is within 2 %.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % t interval of the mean, x̄ ± t_{0.975, n−1} · s / √n (n ≥ 2; for one
    value the interval is unbounded)."""
    n = len(values)
    if n == 0:
        raise ValueError("an interval needs at least one value")
    mean = statistics.fmean(values)
    if n == 1:
        return mean, -math.inf, math.inf
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def interleaved_costs(step: Callable[[str], float], methods: Sequence[str], reference: str, *, warmup: int = 3,
                      per_round: int = 2, min_rounds: int = 5, max_rounds: int = 60, tolerance: float = 0.03,
                      max_seconds: float = 120.0, drain: int = 0, clock: Callable[[], float] = time.perf_counter
                      ) -> dict[str, dict[str, Any]]:
    """Cost of each method relative to `reference` (see the module docstring). `step(m)` runs one real
    training step of method m and returns its seconds. `drain`: untimed steps of a method at the start of
    each of its turns, as many as its data loader prefetched while the other methods ran (workers x
    prefetch factor), so that the timed steps wait for data as they do in training. Returns per method:
    s_per_iter (ratio times the reference's median step), ratio, ratio_low, ratio_high (95 %), rounds,
    converged, step_seconds."""
    if reference not in methods:
        raise ValueError(f"the reference {reference!r} is not among the methods {list(methods)}")
    for m in methods:  # warm-up: caches, allocator, data workers, lazy initialisation
        for _ in range(warmup):
            step(m)
    per: dict[str, list[float]] = {m: [] for m in methods}
    steps: dict[str, list[float]] = {m: [] for m in methods}
    start, rounds, converged = clock(), 0, False
    while rounds < max_rounds:
        k = rounds % len(methods)
        for m in [*methods[k:], *methods[:k]]:
            for _ in range(drain):
                step(m)
            times = [step(m) for _ in range(per_round)]
            steps[m] += times
            per[m].append(statistics.fmean(times))
        rounds += 1
        if rounds >= min_rounds:
            intervals = [mean_interval([a / b for a, b in zip(per[m], per[reference])]) for m in methods]
            converged = all(hi - mean <= tolerance * mean for mean, _, hi in intervals)
            if converged or clock() - start >= max_seconds:
                break
    base = statistics.median(steps[reference])
    out = {}
    for m in methods:
        mean, lo, hi = mean_interval([a / b for a, b in zip(per[m], per[reference])])
        out[m] = {"method": m, "s_per_iter": mean * base, "ratio": mean, "ratio_low": lo, "ratio_high": hi,
                  "reference": reference, "rounds": rounds, "per_round": per_round, "warmup_steps": warmup,
                  "drain_steps": drain,
                  "converged": converged, "tolerance": tolerance, "step_seconds": steps[m]}
    return out


def recheck_count(seconds: float, iteration: int, elapsed: float, s_per_iter: float) -> int:
    """The count a run reaches when, `elapsed` budget-clock seconds in at `iteration`, the rest of its
    `seconds` goes at `s_per_iter`: `iteration + floor((seconds − elapsed) / s_per_iter)`, at least 1."""
    if not s_per_iter > 0 or not math.isfinite(s_per_iter):
        raise ValueError(f"seconds per iteration must be a positive number, got {s_per_iter!r}")
    return max(1, iteration + math.floor(max(0.0, seconds - elapsed) / s_per_iter + 1e-9))


class Recheck:
    """Re-resolves a probed count once, from the run's own speed (see the module docstring of
    train/engine/trainer.py for where it is called). The probe runs in a fresh process, so its steps pay for
    starting data workers and warming the allocator and kernels, which training does once; its count can
    leave a good part of the budget unused. After `after` training iterations of this process, the mean
    s/iter of the second half of them (budget clock, rank 0's under DDP) gives the count
    `recheck_count(budget, iteration, elapsed, s_per_iter)`, recorded in the probe record (`recheck`,
    `probe_iterations`, `iterations`).

    A record that already holds a recheck (probe.json of a resumed run) is replayed: the probed count until
    the recheck's iteration, the re-resolved one from there, as in the run that was interrupted."""

    def __init__(self, record: dict[str, Any], after: int = 0) -> None:
        self.record = record
        self.after = int(after)
        self.done = False
        self.replayed = False  # the count came from the record, not from this process's speed
        self._start: int | None = None
        self._mark: tuple[int, float] | None = None

    def observe(self, iteration: int, elapsed: float) -> int | None:
        """Called at the top of every loop pass with the iteration reached and the budget clock; returns
        the new count once (when it is resolved, or when a replay reaches its iteration), else None."""
        if self.done:
            return None
        done = self.record.get("recheck")
        if done is not None:
            if iteration < int(done["iteration"]):
                return None
            self.done = self.replayed = True
            return int(done["iterations"])
        if self.after <= 0:
            return None
        if self._start is None:
            self._start = iteration
        if self._mark is None and iteration >= self._start + self.after // 2:
            self._mark = (iteration, elapsed)
        if iteration < self._start + self.after or self._mark is None or iteration <= self._mark[0]:
            return None
        s_per_iter = (elapsed - self._mark[1]) / (iteration - self._mark[0])
        if not s_per_iter > 0:
            return None  # a clock that did not move (no time to measure): keep the probed count
        self.done = True
        n = recheck_count(float(self.record["budget_seconds"]), iteration, elapsed, s_per_iter)
        self.record["recheck"] = {"after": self.after, "from_iteration": self._mark[0], "iteration": iteration,
                                  "elapsed_s": elapsed, "s_per_iter": s_per_iter, "iterations": n}
        self.record["iterations"] = n
        return n

    def describe(self) -> str:
        """The console line for the count `observe` returned."""
        r, p = self.record["recheck"], self.record
        if self.replayed:
            return (f"[probe] {p.get('method')}: {r['iterations']} iterations from iteration {r['iteration']} on, "
                    f"as re-resolved from the training speed before the run was resumed")
        return (f"[probe] {p.get('method')}: training ran at {r['s_per_iter']:.3f} s/iter over iterations "
                f"{r['from_iteration']}-{r['iteration']} (the probe: {p['s_per_iter']:.3f}); the "
                f"{p['budget_seconds']:g}s budget is {r['iterations']} iterations (the probe's count: "
                f"{p['probe_iterations']})")


def resolve_budget(cfg: Config, probe: Callable[[int, int], dict[str, Any]], env: DistEnv, run_dir: Path
                   ) -> dict[str, Any] | None:
    """With `train.budget_mode=probe` and a wall-clock budget: the probe record (`probe(warmup, steps)`,
    a `probe_record`) with the count it resolves to in `probe_iterations` and `iterations`, after setting
    `cfg.train.iterations` to it; else None. The caller trains for that count and, with
    `train.probe_recheck` > 0, re-resolves it once from its own speed (`Recheck`; `Trainer.follow_probe`).
    A resumed run reuses the record in `<run>/probe.json` (and its recheck), so that it finishes the same
    count."""
    import torch

    from runtime.io import atomic_write_json
    from train.engine.distributed import broadcast_

    budget = parse_budget(cfg.train.budget)
    if not budget.is_time or cfg.train.budget_mode != "probe" or cfg.train.iterations is not None:
        return None
    path = run_dir / "probe.json"
    if cfg.train.resume and path.is_file() and (run_dir / "last.pt").is_file():
        record = json.loads(path.read_text())
    else:
        record = probe(cfg.train.probe_warmup, cfg.train.probe_steps)
    n = torch.tensor([resolve_iterations(float(budget.seconds or 0), record["s_per_iter"])], dtype=torch.float64)
    n = broadcast_(n.to(env.device), 0)  # rank 0's probe decides for every rank
    record["probe_iterations"] = int(n.item())
    if "recheck" not in record:
        record["iterations"] = record["probe_iterations"]
    record["budget_seconds"] = float(budget.seconds or 0)
    # the run starts on the probed count; a recheck (live or replayed) changes it during training
    cfg.train.iterations = record["probe_iterations"]
    if env.is_main:
        atomic_write_json(path, record)
    drained = f", {record['drain_steps']} prefetched batches drained first" if record.get("drain_steps") else ""
    then = (f", {record['iterations']} after the recheck at iteration {record['recheck']['iteration']}"
            if "recheck" in record else
            f", checked again after {cfg.train.probe_recheck} training iterations" if cfg.train.probe_recheck else "")
    print(f"[probe] {record['method']}: {record['s_per_iter']:.3f} s/iter (median of {record['timed_steps']} steps"
          f"{drained}) -> {record['probe_iterations']} iterations for {budget}{then}", flush=True)
    return record


class BudgetClock:
    """The training seconds a time budget counts: it runs between `start()` and `pause()`, and `paused()`
    stops it around work that does not count (validation, checkpoint writing). `elapsed` holds the time of
    the finished segments (what a checkpoint saves); `now()` adds the running one. `sync` is called before
    a segment ends, so that queued device work is charged to it (torch.cuda.synchronize on a GPU)."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.elapsed = 0.0
        self.timer: Callable[[], float] = time.perf_counter  # also the speed probe's (tests fake it)
        self._sync = sync
        self._t0: float | None = None  # start of the running segment (None: paused)

    def now(self) -> float:
        return self.elapsed + (self.timer() - self._t0 if self._t0 is not None else 0.0)

    def start(self) -> None:
        self._t0 = self.timer()

    def pause(self) -> None:
        if self._t0 is not None:
            if self._sync is not None:
                self._sync()
            self.elapsed = self.now()
            self._t0 = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        running = self._t0 is not None
        self.pause()
        try:
            yield
        finally:
            if running:
                self.start()
