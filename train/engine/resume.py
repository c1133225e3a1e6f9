"""The resumable training state: what last.pt holds, writing it only while the weights are finite, and
resuming from it (weights, objective, optimiser, AMP scaler, budget clock, best mIoU and validation
history, every rank's RNG and data-loader position), with the log trimmed to the resumed iteration.

`Resumable` is the part of `train.engine.Trainer` that does this; it uses the trainer's student,
objective, optimiser, scaler, loader, run folder and distributed environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from runtime.errors import UserError
from runtime.io import atomic_write_text
from train.engine import distributed as D
from train.engine.checkpoint import (
    capture_rng,
    load_model_state,
    load_training_state,
    model_arch,
    restore_rng,
    save_training_state,
    unwrap,
)
from train.engine.console import log


class Resumable:
    """last.pt: `training_state`, `_save_last`, `_maybe_resume` (mixed into Trainer)."""

    # provided by Trainer
    student: Any
    objective: Any
    optimizer: Any
    scaler: Any
    loader: Any
    data_info: Any
    env: Any
    cfg: Any
    run_dir: Path
    device: torch.device
    iteration: int
    elapsed: float
    best_miou: float
    best_iteration: int | None
    val_history: list[Any]
    budget: Any
    resumed_from: int | None
    _last_saved: int
    # and the methods _train_info(val_miou) (the checkpoint's `train` block) and _any_rank(flag)

    def training_state(self) -> dict[str, Any]:
        """Everything last.pt holds (collective under DDP: every rank's RNG and loader state)."""
        ranks = D.gather_objects({"rng": capture_rng(), "loader": self.loader.state_dict()})
        return {
            "model": unwrap(self.student).state_dict(),
            "arch": model_arch(self.student),
            "data": self.data_info.to_dict(),
            "train": self._train_info(None),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "iteration": self.iteration,
            "elapsed_s": self.elapsed,
            "best_miou": self.best_miou if self.best_iteration is not None else None,
            "best_iteration": self.best_iteration,
            "val_history": self.val_history,
            "world_size": self.env.world,
            "ranks": ranks,
        }

    def _params_finite(self) -> bool:
        """Whether every parameter and buffer of the student and objective is finite (on every rank)."""
        tensors = [t for m in (self.student, self.objective) for t in (*m.parameters(), *m.buffers())
                   if t.is_floating_point()]
        ok = torch.stack([torch.isfinite(t).all() for t in tensors]).all() if tensors else torch.tensor(True)
        return not self._any_rank(~ok.to(self.device))

    def _save_last(self) -> bool:
        """Write last.pt, unless the weights are not finite: a finite last.pt is never replaced by a broken
        one. Returns whether it was written."""
        if not self._params_finite():
            log(f"the weights are not finite at iteration {self.iteration}; last.pt is not overwritten")
            return False
        state = self.training_state()
        if self.env.is_main:
            save_training_state(self.run_dir / "last.pt", state)
        self._last_saved = self.iteration
        return True

    def _maybe_resume(self) -> None:
        path = self.run_dir / "last.pt"
        log_path = self.run_dir / "log.jsonl"
        if not path.is_file() or not self.cfg.train.resume:
            if path.is_file():
                log(f"train.resume=false: starting afresh; {path} will be overwritten")
            if self.env.is_main and log_path.exists():
                log_path.unlink()
            return
        state = load_training_state(path)
        load_model_state(self.student, state["model"], str(path), state.get("arch"))
        try:
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"{path} was written by a different method or model ({str(e).splitlines()[0]}); "
                            f"choose another train.name, or pass train.resume=false to start afresh") from e
        if not self._params_finite():
            raise UserError(f"{path} holds non-finite weights (a run that diverged); start afresh with "
                            f"train.resume=false and a lower optim.lr")
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.elapsed = float(state["elapsed_s"])
        if state.get("best_miou") is not None:
            self.best_miou, self.best_iteration = float(state["best_miou"]), state.get("best_iteration")
        self.val_history = list(state.get("val_history", []))
        ranks = state["ranks"]
        if len(ranks) != self.env.world:
            log(f"{path} was written by {len(ranks)} processes, this run has {self.env.world}: "
                f"the data order after resuming differs from an uninterrupted run")
        mine = ranks[min(self.env.rank, len(ranks) - 1)]
        restore_rng(mine["rng"])
        self.loader.load_state_dict(mine["loader"])
        self.resumed_from = self.iteration
        if self.env.is_main and log_path.exists():
            truncate_log(log_path, self.iteration)
        log(f"resumed from {path} at iteration {self.iteration} ({self.elapsed:.1f}s of the {self.budget} "
            f"budget spent)")


def truncate_log(log_path: Path, iteration: int) -> None:
    """Keep the log lines up to `iteration` (the resumed one); drop a torn line (a kill during a write)."""
    kept, torn = [], 0
    for ln in log_path.read_text(errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError:
            torn += 1
            continue
        if isinstance(rec, dict) and rec.get("iteration", 0) <= iteration:
            kept.append(ln)
    if torn:
        log(f"{log_path}: dropped {torn} incomplete line(s) (the run was stopped while writing)")
    atomic_write_text(log_path, "".join(ln + "\n" for ln in kept))

