"""The one training loop, shared by teacher training, every distillation method and the comparisons.

Per iteration (see train/losses/objective.py):

    lr    = base_lr * lr_mult * (1 - progress) ** poly_power   (x (i+1)/warmup during warmup)
    x, y  = next(train data)                     # channels_last, non_blocking
    t     = teacher(x)  under no_grad            # frozen, eval, autocast; or the batch's cached targets
    terms = objective(student(x), t, y, step)    # autocast; student + objective wrapped together in DDP
    loss  = sum(terms); stop with last.pt saved if it is not finite; backward, clip, step

`progress` is iteration / iterations for an iteration budget, elapsed / seconds for a wall-clock budget.
A wall-clock budget with `train.iterations` set (resolved by `probe`, see train/engine/budget.py) runs exactly
that many iterations: progress is iteration / iterations, but the methods still see a time budget
(`StepInfo.is_time_budget`), as the user stated one. A probed count is re-resolved once from the run's own
speed (`Trainer.recheck`, train/engine/budget.py `Recheck`): at the top of the loop pass where it is due, from
the budget clock, before the budget is checked; from then on progress is iteration / the new count.
With a teacher target cache, batches are (x, y, {output: maps}) and the teacher's output is built from the
maps (train/teachers/targets.py): the methods read the same `SegOutput` either way.
The budget clock counts data loading, teacher forward and the student step; it stops during validation
and checkpoint writing, and it is saved in last.pt so that a resumed run has the same remaining budget.
Under DDP, rank 0's clock is shared with every rank each iteration so all ranks agree on the schedule
and stop at the same iteration; only rank 0 writes files.

Run folder (`runs/<name>/`): config.yaml, log.jsonl, best.pt (best validation mIoU, deployable),
final.pt (weights at the end of the budget, deployable), last.pt (resumable state), results.json.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from runtime.errors import Terminated, UserError
from runtime.io import atomic_write_json
from runtime.metadata import DataInfo
from runtime.metrics import ConfusionMatrix
from train.config import Config, save_config
from train.data import footage_view, gather_skipped
from train.engine import distributed as D
from train.engine.budget import Budget, BudgetClock, Recheck, parse_budget, probe_record
from train.engine.checkpoint import (
    capture_rng,
    restore_rng,
    save_checkpoint,
    seed_everything,
    unwrap,
)
from train.engine.console import log
from train.engine.resume import Resumable
from train.engine.schedule import Every, choose_amp_dtype, poly_lr
from train.losses.base import resize
from train.losses.objective import Objective, StepInfo, require_teacher
from train.models.output import SegOutput
from train.teachers.targets import cached_output
from train.torch_env import git_commit, peak_memory_mb, torch_environment


def default_run_dir(cfg: Config, method: str) -> Path:
    """runs/<train.name>, or runs/<config stem>-<method>-s<seed>."""
    name = cfg.train.name or f"{Path(cfg.source).stem if cfg.source else 'run'}-{method}-s{cfg.train.seed}"
    return Path(cfg.train.runs_dir) / name


class _Step(nn.Module):
    """Student + objective in one module, so DDP reduces the gradients of both."""

    def __init__(self, student: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: SegOutput | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        s = self.student(x, detach_encoder=self.objective.detach_encoder)
        return self.objective(s, t, y, step)


class Trainer(Resumable):
    """Train `model` with `objective` on `train_loader` for `cfg.train.budget`; see the module docstring.

    `train_loader` is a DataLoader (wrapped in train.data.InfiniteLoader) or already an endless iterator
    with `state_dict()` / `load_state_dict()`; batches are (images N x 3 x H x W float, labels N x H x W
    int64). `val_loader` yields the same (or is None: no validation). `teacher` is frozen here.
    """

    def __init__(self, cfg: Config, model: nn.Module, objective: Objective, train_loader: Any,
                 val_loader: Any, data_info: DataInfo, teacher: nn.Module | None = None,
                 run_dir: str | Path | None = None, dist_env: D.DistEnv | None = None,
                 method: str | None = None, cached_targets: bool = False) -> None:
        self.cfg = cfg
        self.env = dist_env or D.DistEnv(device=D.resolve_device(cfg.train.device))
        self.device = self.env.device
        self.method = method or getattr(objective, "method", None) or cfg.distill.method
        self.data_info = data_info
        self.stated_budget = parse_budget(cfg.train.budget)
        resolved = self.stated_budget.is_time and cfg.train.iterations is not None
        self.budget = Budget(iterations=cfg.train.iterations) if resolved else self.stated_budget
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg, self.method)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.cached_targets = cached_targets and objective.needs_teacher
        if objective.needs_teacher:
            require_teacher(self.method, teacher is not None or self.cached_targets)

        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.amp_dtype = choose_amp_dtype(cfg.train.amp, cfg.train.amp_dtype, self.device)
        self.student = model.to(self.device).to(memory_format=self.memory_format)
        self.objective = objective.to(self.device)
        self.teacher = self._freeze(teacher) if objective.needs_teacher and not self.cached_targets else None
        self.loader = train_loader if _is_stateful_iterator(train_loader) else _infinite(train_loader)
        self.val_loader = val_loader

        self.optimizer = self._build_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        student_fwd: nn.Module = torch.compile(self.student) if cfg.train.compile else self.student  # type: ignore[assignment]
        step: nn.Module = _Step(student_fwd, self.objective)
        if self.env.distributed:
            has_extra = any(p.requires_grad for p in self.objective.parameters()) or self.objective.detach_encoder
            # device_ids=None: the module is already on its device and inputs are not copied again.
            step = nn.parallel.DistributedDataParallel(step, device_ids=None, find_unused_parameters=has_extra)
        self.step_module = step

        self.iteration = 0
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else None
        self.clock = BudgetClock(sync)  # seconds, excluding validation and checkpoint writing
        self.best_miou = float("-inf")
        self.best_iteration: int | None = None
        self.val_history: list[dict[str, Any]] = []
        self.resumed_from: int | None = None
        self._stop_requested = False
        self._stop_signal: int | None = None
        self._last_saved: int | None = None  # iteration of the last finite state written to last.pt
        self._data: Iterator[Any] | None = None
        self.recheck: Recheck | None = None  # set by follow_probe for a probed budget
        # with a transfer set (data.unlabeled) a batch's first data.batch_size samples are the labeled ones
        self.labeled_per_batch = cfg.data.batch_size if cfg.data.unlabeled else None

    # ------------------------------------------------------------------------------------------
    # set-up

    def _freeze(self, teacher: nn.Module | None) -> nn.Module | None:
        if teacher is None:
            return None
        teacher = unwrap(teacher).to(self.device).to(memory_format=self.memory_format).eval()
        teacher.requires_grad_(False)
        return teacher

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        extra = [p for p in self.objective.parameters() if p.requires_grad]
        student = [p for p in self.student.parameters() if p.requires_grad]
        encoder = getattr(self.student, "encoder", None)
        groups: list[dict[str, Any]]
        if o.head_lr_mult != 1.0 and isinstance(encoder, nn.Module):
            enc_ids = {id(p) for p in encoder.parameters()}
            groups = [{"params": [p for p in student if id(p) in enc_ids], "lr_mult": 1.0},
                      {"params": [p for p in student if id(p) not in enc_ids] + extra, "lr_mult": o.head_lr_mult}]
        else:
            if o.head_lr_mult != 1.0:
                log(f"optim.head_lr_mult={o.head_lr_mult} ignored: the model has no `encoder` submodule")
            groups = [{"params": student + extra, "lr_mult": 1.0}]
        for g in groups:
            g["lr"] = o.lr * g["lr_mult"]
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        if o.name == "adamw":
            return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        raise UserError(f"optim.name '{o.name}' is not one of sgd, adamw")

    # ------------------------------------------------------------------------------------------
    # budget clock (train/engine/budget.py BudgetClock)

    @property
    def elapsed(self) -> float:
        """Budget seconds of the finished clock segments (what checkpoints save and resume restores)."""
        return self.clock.elapsed

    @elapsed.setter
    def elapsed(self, value: float) -> None:
        self.clock.elapsed = value

    @property
    def _timer(self) -> Callable[[], float]:
        """The clock's timer, also the speed probe's (tests fake it)."""
        return self.clock.timer

    @_timer.setter
    def _timer(self, timer: Callable[[], float]) -> None:
        self.clock.timer = timer

    def _progress(self, elapsed: float) -> float:
        if self.budget.is_time:
            return elapsed / float(self.budget.seconds or 1.0)
        return self.iteration / max(1, self.budget.iterations or 1)

    def _budget_spent(self, elapsed: float) -> bool:
        if self.budget.is_time:
            return elapsed >= float(self.budget.seconds or 0.0)
        return self.iteration >= (self.budget.iterations or 0)

    def _set_lr(self, progress: float) -> float:
        o = self.cfg.optim
        lr = poly_lr(o.lr, progress, o.poly_power)
        if o.warmup_iters and self.iteration < o.warmup_iters:
            lr *= (self.iteration + 1) / o.warmup_iters
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        return lr

    # ------------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> dict[str, Any]:
        """Train to the end of the budget (resuming from last.pt when allowed); returns the results."""
        old_handlers = self._install_stop_handlers()
        bar = None
        try:
            seed_everything(self.cfg.train.seed + self.env.rank)
            if self.env.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_config(self.cfg, self.run_dir / "config.yaml")
            self._maybe_resume()
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
                torch.cuda.reset_peak_memory_stats(self.device)
            self._data = iter(self.loader)
            bar = self._progress_bar()
            self._loop(bar)
            return self._finish()
        finally:
            if bar is not None:
                bar.close()
            for signum, old in old_handlers.items():
                signal.signal(signum, old)

    def _loop(self, bar: tqdm | None) -> None:
        cfg = self.cfg.train
        val_every, ckpt_every = Every(cfg.val_every), Every(cfg.ckpt_every)
        val_every.restart(self.elapsed)
        ckpt_every.restart(self.elapsed)
        last_log = (self.iteration, self.elapsed)
        stepped = False
        self.clock.start()
        while True:
            # Periodic work runs here, after the shared control, so that wall-clock periods use rank 0's
            # clock and every rank validates and checkpoints at the same iteration.
            elapsed, stop = self._shared_control()
            count = self.recheck.observe(self.iteration, elapsed) if self.recheck is not None else None
            if count is not None:
                with self.clock.paused():
                    self._recount(count, bar)
            if stepped:
                if self.val_loader is not None and val_every.due(self.iteration, elapsed):
                    with self.clock.paused():
                        self._validate_and_keep_best()
                if ckpt_every.due(self.iteration, elapsed):
                    with self.clock.paused():
                        self._save_last()
            if self._budget_spent(elapsed):
                break
            if stop:
                with self.clock.paused():
                    saved = self._save_last()
                log(f"stopped at iteration {self.iteration}; " + ("last.pt saved, run the same command to resume"
                                                                  if saved else "last.pt not written"))
                raise Terminated() if self._stop_signal == signal.SIGTERM else KeyboardInterrupt()
            lr = self._set_lr(self._progress(elapsed))
            step = StepInfo(self.iteration, self._progress(elapsed), self.stated_budget.is_time,
                            self.labeled_per_batch)
            terms, loss = self._forward(step)
            if self._any_rank(~torch.isfinite(loss.detach())):
                self._nonfinite(terms)
            self._backward(loss)
            self.iteration += 1
            stepped = True
            it, now = self.iteration, self.clock.now()
            if cfg.log_every > 0 and it % cfg.log_every == 0:
                s_per_iter = (now - last_log[1]) / max(1, it - last_log[0])
                last_log = (it, now)
                self._log_step(terms, lr, now, s_per_iter, bar)
            if bar is not None:
                bar.update((min(now, bar.total) - bar.n) if self.budget.is_time else 1)
        self.clock.pause()

    def follow_probe(self, record: dict[str, Any] | None, recheck_after: int = 0) -> None:
        """Train for the count a probe resolved (train/engine/budget.py `resolve_budget`; None: the budget as
        stated) and, with `recheck_after` > 0, re-resolve it once after that many iterations (`Recheck`)."""
        if record is None:
            return
        self.budget = Budget(iterations=int(record["probe_iterations"]))
        self.recheck = Recheck(record, recheck_after)

    def _recount(self, count: int, bar: tqdm | None) -> None:
        """Train for `count` iterations from now on (a probed count re-resolved by `self.recheck`); rank 0
        records it in probe.json and config.yaml."""
        assert self.recheck is not None
        self.budget = Budget(iterations=count)
        self.cfg.train.iterations = count
        if self.env.is_main:
            log(self.recheck.describe())
            atomic_write_json(self.run_dir / "probe.json", self.recheck.record)
            save_config(self.cfg, self.run_dir / "config.yaml")
        if bar is not None:
            bar.total = count
            bar.refresh()

    def prefetched_batches(self) -> int:
        """How many batches the training DataLoader keeps ready: workers x prefetch factor (0 without
        workers, or for a loader that is no DataLoader)."""
        loader = getattr(self.loader, "loader", None)
        workers = int(getattr(loader, "num_workers", 0) or 0)
        return workers * int(getattr(loader, "prefetch_factor", None) or 2) if workers else 0

    def probe(self, warmup: int = 3, steps: int = 5, timer: Callable[[], float] | None = None,
              drain: int | None = None) -> dict[str, Any]:
        """Time `warmup + drain + steps` real training steps (data loading, teacher or cache, student step)
        and put everything back as it was: weights, optimiser, scaler, RNG and data position. Only the last
        `steps` are timed: after the warm-up, `drain` (default: the loader's prefetched batches) more untimed
        steps empty the batches the data workers got ready meanwhile, so that the timed ones wait for data
        as training does. Returns the probe record (train/engine/budget.py): per-step seconds, their median,
        device, threads, versions, and `drain_steps`."""
        drain = self.prefetched_batches() if drain is None else drain
        timer = timer or self._timer

        saved = copy.deepcopy({"student": self.student.state_dict(), "objective": self.objective.state_dict(),
                               "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()})
        rng, loader_state = capture_rng(), self.loader.state_dict()
        seed_everything(self.cfg.train.seed + self.env.rank)
        self._data = iter(self.loader)
        times = []
        try:
            for i in range(warmup + drain + steps):
                t = self.timed_step(i, timer)
                if i >= warmup + drain:
                    times.append(t)
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.student.load_state_dict(saved["student"])
            self.objective.load_state_dict(saved["objective"])
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.scaler.is_enabled():
                self.scaler.load_state_dict(saved["scaler"])
            restore_rng(rng)
            self.loader.load_state_dict(loader_state)
            self._data = None
        return {**probe_record(times, warmup, self.method, torch_environment(self.device)), "drain_steps": drain}

    def timed_step(self, i: int = 0, timer: Callable[[], float] = time.perf_counter) -> float:
        """Seconds of one real training step: the next batch (data loading, teacher or cache), forward,
        backward and optimiser step. Changes the weights and the data position (probe() restores them)."""
        if self._data is None:
            self._data = iter(self.loader)
        t0 = timer()
        _, loss = self._forward(StepInfo(i, 0.0, self.stated_budget.is_time, self.labeled_per_batch))
        self._backward(loss)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return timer() - t0

    def _shared_control(self) -> tuple[float, bool]:
        """(budget clock, stop requested), rank 0's values on every rank."""
        elapsed, stop = self.clock.now(), self._stop_requested
        if self.env.distributed:
            # a Ctrl-C reaches every rank; rank 0's clock and flag decide
            mine = [elapsed, float(stop)] if self.env.is_main else [0.0, 0.0]
            t = torch.tensor(mine, dtype=torch.float64, device=self.device)
            D.all_reduce_(t, "max")
            elapsed, stop = float(t[0]), bool(t[1])
        return elapsed, stop

    def _any_rank(self, flag: torch.Tensor) -> bool:
        if self.env.distributed:
            flag = D.all_reduce_(flag.to(torch.float32).reshape(1), "max")
        return bool(flag.item())

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, SegOutput | None]:
        """(images, labels, the teacher's output from the batch's cached targets or None)."""
        assert self._data is not None
        batch = next(self._data)
        x, y = batch[0], batch[1]
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True).long()
        cached = None
        if self.cached_targets:
            if len(batch) < 3:
                raise UserError("the training loader yields no teacher targets; build the loaders with the "
                                "teacher cache (distill.teacher_cache) or use the online teacher")
            cached = cached_output(batch[2], self.device)
        return x, y, cached

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _forward(self, step: StepInfo) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x, y, t = self._batch()
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                t = self.teacher(x)
        with self._autocast():
            terms = self.step_module(x, y, t, step)
        if not terms:
            raise UserError(f"the objective of method '{self.method}' returned no loss terms")
        loss = torch.stack([v.float() for v in terms.values()]).sum()
        return terms, loss

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _nonfinite(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop on a non-finite loss, keeping the last finite state in last.pt (see `_save_last`)."""
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        with self.clock.paused():
            saved = self._save_last()
        last = self.run_dir / "last.pt"
        advice = (f"Try a lower optim.lr (now {self.cfg.optim.lr:g}), train.amp=false, or optim.grad_clip=1.0")
        if saved:
            where = f"the weights are finite and {last} holds the state after iteration {self.iteration}"
            then = "then run the same command with the new setting to resume from it"
        elif self._last_saved is not None or (self.resumed_from is not None and last.is_file()):
            at = self._last_saved if self._last_saved is not None else self.resumed_from
            where = (f"the weights had already become non-finite, so {last} was kept as it was: it holds the "
                     f"last finite state, after iteration {at}")
            then = "then run the same command with the new setting to resume from it"
        else:
            where = "the weights had already become non-finite and no finite state was saved in this run"
            then = "then run the command again with train.resume=false"
        data_hint = ""
        if any(float(v) <= 0 for v in self.data_info.std):
            data_hint = f" (data.std {list(self.data_info.std)} has a zero: fix it first)"
        raise UserError(f"the loss is not finite at iteration {self.iteration + 1} ({values}); {where}. "
                        f"{advice}{data_hint}, {then}")

    # ------------------------------------------------------------------------------------------
    # logging

    def _progress_bar(self) -> tqdm | None:
        if not self.env.is_main:
            return None
        if self.budget.is_time:
            return tqdm(total=float(self.budget.seconds or 0), initial=self.elapsed, unit="s",
                        desc=self.run_dir.name, dynamic_ncols=True, mininterval=1.0,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
        return tqdm(total=self.budget.iterations, initial=self.iteration, unit="it", desc=self.run_dir.name,
                    dynamic_ncols=True, mininterval=1.0)

    def _log_step(self, terms: dict[str, torch.Tensor], lr: float, elapsed: float, s_per_iter: float,
                  bar: tqdm | None) -> None:
        values = {k: float(v.detach()) for k, v in terms.items()}
        raw = {f"raw_{k}": float(v) for k, v in getattr(self.objective, "last_raw", {}).items()}
        # with a transfer set: each term's value on the labeled samples and on the unlabeled frames
        raw.update({k: float(v) for k, v in getattr(self.objective, "last_parts", {}).items()})
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
        self._write_log({"kind": "train", "iteration": self.iteration, "elapsed": round(elapsed, 4), "lr": lr,
                         "loss": sum(values.values()), **values, **raw, "s_per_iter": s_per_iter})

    def _write_log(self, line: dict[str, Any]) -> None:
        if self.env.is_main:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")

    # ------------------------------------------------------------------------------------------
    # validation and checkpoints

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """mIoU of the student on `val_loader`: argmax of the logits upsampled to the label size.

        With a DistributedSampler every rank evaluates its share and the confusion matrices are summed;
        otherwise rank 0 evaluates the whole set and shares the result."""
        k = self.data_info.num_classes
        cm = ConfusionMatrix(k, self.data_info.ignore_index)
        sampler = getattr(self.val_loader, "sampler", None)
        sharded = isinstance(sampler, torch.utils.data.distributed.DistributedSampler)
        model = unwrap(self.student)
        was_training = model.training
        model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # validation must not shift the training RNG
            if sharded or self.env.is_main:
                for batch in self.val_loader:
                    if batch is None:  # every sample of the batch was left out (data.skip_bad)
                        continue
                    x = batch[0].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                    y = batch[1]
                    with self._autocast():
                        logits = model(x).logits
                    pred = resize(logits.float(), y.shape[-2:]).argmax(1)
                    cm.update(pred.cpu().numpy(), y.numpy())
        model.train(was_training)
        mat = torch.from_numpy(cm.mat).to(self.device)
        if sharded:
            D.all_reduce_(mat, "sum")
        else:
            D.broadcast_(mat, 0)
        cm.mat = mat.cpu().numpy()
        return cm.compute(self.data_info.classes)

    def _validate_and_keep_best(self) -> dict[str, Any]:
        metrics = self.validate()
        miou = metrics["mIoU"]
        record = {"iteration": self.iteration, "elapsed": round(self.elapsed, 4), "mIoU": miou,
                  "pixel_acc": metrics["pixel_acc"], "per_class_iou": metrics["per_class_iou"]}
        self.val_history.append(record)
        self._write_log({"kind": "val", **record})
        log(f"iteration {self.iteration}: val mIoU {miou:.4f}, pixel acc {metrics['pixel_acc']:.4f}")
        if not math.isnan(miou) and miou > self.best_miou and self._params_finite():
            self.best_miou, self.best_iteration = miou, self.iteration
            if self.env.is_main:
                save_checkpoint(self.run_dir / "best.pt", self.student, self.data_info,
                                self._train_info(miou, metrics["per_class_iou"]))
        return metrics

    def _train_info(self, val_miou: float | None, per_class_iou: dict[str, float | None] | None = None
                    ) -> dict[str, Any]:
        """The checkpoint's `train` block; `val_miou` and `per_class_iou` are of the validation it was
        saved after (None for last.pt)."""
        return {
            "method": self.method,
            "config": self.cfg.to_dict(),
            "iterations": self.iteration,
            "elapsed_s": self.elapsed,
            "budget": str(self.stated_budget),
            "val_miou": val_miou,
            "val_per_class_iou": per_class_iou,
            "best_miou": self.best_miou if self.best_iteration is not None else None,
            "best_iteration": self.best_iteration,
            "world_size": self.env.world,
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "git_commit": git_commit(),
        }

    def _per_class_iou(self, iteration: int | None) -> dict[str, float | None] | None:
        """Per-class IoU of the validation at `iteration` (None: none there, or a log from before they
        were recorded)."""
        return next((v.get("per_class_iou") for v in reversed(self.val_history) if v["iteration"] == iteration),
                    None)

    def _finish(self) -> dict[str, Any]:
        final_miou = None
        if self.val_loader is not None:
            last = self.val_history[-1] if self.val_history else None
            if last is None or last["iteration"] != self.iteration:
                self._validate_and_keep_best()
            final_miou = self.val_history[-1]["mIoU"]
        if not self._save_last():
            raise UserError(f"the weights are not finite at the end of training (iteration {self.iteration}); "
                            f"final.pt was not written. Try a lower optim.lr or optim.grad_clip=1.0")
        if self.env.is_main:
            save_checkpoint(self.run_dir / "final.pt", self.student, self.data_info,
                            self._train_info(final_miou, self._per_class_iou(self.iteration)))
            if self.val_loader is not None and self.best_iteration is None:
                log(f"no best.pt: validation gave no score (no labelled pixel in the validation images, or "
                    f"none read); {self.run_dir / 'final.pt'} holds the weights at the end")
        results = {
            "method": self.method,
            "run_dir": str(self.run_dir),
            "best_miou": self.best_miou if self.best_iteration is not None else None,
            "best_iteration": self.best_iteration,
            "final_miou": final_miou,
            "best_per_class_iou": self._per_class_iou(self.best_iteration),
            "final_per_class_iou": self._per_class_iou(self.iteration),
            "iterations": self.iteration,
            "elapsed_s": self.elapsed,
            "s_per_iter": self.elapsed / max(1, self.iteration),
            "peak_mem_mb": peak_memory_mb(self.device),
            "peak_mem_kind": "cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss",
            "budget": str(self.stated_budget),
            "resolved_iterations": self.budget.iterations if self.stated_budget.is_time else None,
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "world_size": self.env.world,
            "resumed_from": self.resumed_from,
            "val_history": self.val_history,
            "best_checkpoint": str(self.run_dir / "best.pt") if self.best_iteration is not None else None,
            "final_checkpoint": str(self.run_dir / "final.pt"),
            "env": torch_environment(self.device),
            "skipped_samples": gather_skipped({"train": self.loader, "val": self.val_loader,
                                               "footage": footage_view(self.loader)}, self.env, self.device),
        }
        if self.env.is_main:
            atomic_write_json(self.run_dir / "results.json", results)
        return results

    # ------------------------------------------------------------------------------------------
    # Ctrl-C: finish the iteration, save last.pt, then stop

    def _install_stop_handlers(self) -> dict[int, Any]:
        """SIGINT (Ctrl-C) and SIGTERM (schedulers) finish the iteration, save last.pt and stop; a second
        Ctrl-C aborts at once. Returns the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested = True
            self._stop_signal = signum
            log(f"{signal.Signals(signum).name}: stopping after this iteration and saving last.pt"
                + (" (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""))

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def _is_stateful_iterator(obj: Any) -> bool:
    return hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict") and hasattr(obj, "__iter__")


def _infinite(loader: Any) -> Any:
    from train.data import InfiniteLoader

    return InfiniteLoader(loader)
