"""Distil a student from a frozen teacher (docs/design.md, "Commands"):

    python -m train.distill --config configs/demo.yaml method=lfd budget=30m teacher=runs/demo/teacher/best.pt

Loads the teacher checkpoint (rebuilt from its `arch`; the engine keeps it frozen, in eval mode, under
no_grad), checks that teacher and dataset name the same classes, builds the student from `model.*`, the
objective from `distill.*` with both models' `feature_info`, and the loaders from `data.*`, then trains with
the shared engine (train/engine/trainer.py) for `train.budget`. The run folder `runs/<name>/` (default
`<config stem>-<method>-s<seed>`) gets best.pt and final.pt (deployable: student only), last.pt (with the
training-only modules, for resuming), log.jsonl and results.json, to which this command adds a `teacher`
and a `student` block (mIoU, parameters, GFLOPs).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_json
from runtime.metadata import DataInfo
from runtime.report import format_table
from train.config import Config, load_config
from train.engine import distributed as D
from train.engine.budget import Budget, parse_budget, resolve_budget
from train.engine.checkpoint import (
    check_same_classes,
    load_checkpoint,
    model_from_checkpoint,
    seed_everything,
)
from train.engine.run_lock import run_lock
from train.engine.trainer import Trainer, default_run_dir
from train.losses import METHODS, build_objective, needs_teacher, parse_method, teacher_reads
from train.losses.objective import require_teacher
from train.models import build_model, feature_info, model_summary
from train.models.output import FeatureInfo
from train.teachers.backend_teacher import require_features
from train.teachers.class_scores import checkpoint_class_report
from train.teachers.source import BACKEND, load_teacher


def read_teacher(path: str | Path | None, method: str) -> dict[str, Any] | None:
    """The teacher checkpoint dict (weights on the CPU) of this project's checkpoint; for a foreign or
    exported teacher (train/teachers/source.py) its record {kind, source, ...}; None when the method needs
    none and none is given."""
    from train.teachers.source import CHECKPOINT, check_teacher, teacher_kind, teacher_record

    if path is None:
        if needs_teacher(method):
            require_teacher(method, False)
        return None
    check_teacher(path)
    if teacher_kind(path) != CHECKPOINT:
        return teacher_record(path)
    return load_checkpoint(path)


def checkpoint_miou(ckpt: dict[str, Any]) -> float | None:
    """The validation mIoU a checkpoint's training recorded (best, else final), or None."""
    train = ckpt.get("train") or {}
    for key in ("best_miou", "val_miou"):
        if train.get(key) is not None:
            return float(train[key])
    return None


def summary_table(teacher: dict[str, Any] | None, student: dict[str, Any]) -> str:
    """Console table: mIoU, parameters (M) and GFLOPs of teacher and student."""
    rows = []
    for who, s in (("teacher", teacher), ("student", student)):
        if s is not None:
            miou = s.get("miou")
            rows.append({"model": who, "arch": s.get("arch"), "mIoU": None if miou is None else 100 * miou,
                         "params (M)": s["params"] / 1e6, "GFLOPs": s["gflops"]})
    return format_table(rows, ["model", "arch", "mIoU", "params (M)", "GFLOPs"], digits=2)


def prepare_cache(cfg: Config, env: D.DistEnv) -> tuple[Any, list[FeatureInfo], dict[str, Any], Any] | None:
    """(teacher targets, teacher feature contract, cache record, footage targets or None) for
    `distill.teacher_cache` in `distill.cache_mode`, or None when it is off or the method reads no teacher.
    With a transfer set (`data.unlabeled`) its frames get a cache of their own (`distill.footage_cache`;
    single mode when the labeled split's is exact). Rank 0 builds `auto` caches; the others wait for them."""
    from train.teachers.cache_format import teacher_feature_info
    from train.teachers.targets import cache_record, open_cache, open_targets

    if cfg.distill.teacher_cache == "off" or not needs_teacher(cfg.distill.method):
        return None
    assert cfg.distill.teacher is not None
    outputs = teacher_reads(cfg.distill)
    fcfg = footage_cache_config(cfg)
    built = built_footage = False
    if env.is_main:
        _, _, built = open_cache(cfg, cfg.distill.teacher, outputs, build=True, world=env.world)
        if fcfg is not None:
            _, _, built_footage = open_cache(fcfg, cfg.distill.teacher, outputs, build=True, footage=True)
    D.barrier()
    targets, manifest, _ = open_targets(cfg, cfg.distill.teacher, outputs, build=False, world=env.world)
    record = cache_record(targets.path, manifest, outputs, built)
    footage = None
    if fcfg is not None:
        footage, f_manifest, _ = open_targets(fcfg, cfg.distill.teacher, outputs, build=False, footage=True)
        record["footage"] = cache_record(footage.path, f_manifest, outputs, built_footage)
    return targets, teacher_feature_info(manifest), record, footage


def footage_cache_config(cfg: Config) -> Config | None:
    """The config the transfer set's cache is made with (None without data.unlabeled): cfg itself, or with
    an exact labeled cache, a copy in the single mode (the exact mode stores the labeled split's crops)."""
    if not cfg.data.unlabeled:
        return None
    if cfg.distill.cache_mode != "exact":
        return cfg
    fcfg = copy.deepcopy(cfg)
    fcfg.distill.cache_mode, fcfg.distill.cache_topk = "single", 0
    return fcfg


def check_transfer_set(cfg: Config) -> None:
    """A transfer set needs a method that reads the teacher; pseudo-labels need a transfer set."""
    if cfg.data.unlabeled and not needs_teacher(cfg.distill.method):
        raise UserError(f"data.unlabeled was given with method={cfg.distill.method}: the student alone has no "
                        f"teacher to learn the unlabeled frames from; use a distillation method (kd, lfd, ...) or "
                        f"drop data.unlabeled")
    if cfg.distill.pseudo_labels and not cfg.data.unlabeled:
        raise UserError("distill.pseudo_labels=true labels unlabeled frames, and data.unlabeled gives none; pass "
                        "data.unlabeled=PATH (a folder, glob, video or synthetic:N)")


def distill(cfg: Config, probe_only: str | Path | None = None) -> dict[str, Any]:
    """Train `cfg.model` from the teacher `cfg.distill.teacher` with `cfg.distill.method`; returns results.json.
    With `probe_only`, time a probe of the method instead (train/engine/budget.py), write it there and return it."""
    method = cfg.distill.method
    budget = parse_budget(cfg.train.budget)
    teacher_ckpt = read_teacher(cfg.distill.teacher, method)
    run_dir = default_run_dir(cfg, method)
    cfg.train.name = cfg.train.name or run_dir.name  # saved with the config, so the run is reproducible

    env = D.init_distributed(cfg.train.device)
    try:
        with run_lock(run_dir, env, take=probe_only is None):
            return _distill(cfg, env, method, budget, teacher_ckpt, run_dir, probe_only)
    finally:
        D.cleanup()


@dataclass
class Run:
    """Everything one distillation run trains with (built by `build_run`)."""

    trainer: Trainer
    teacher: nn.Module | None  # the online teacher (None with a cache or without a teacher)
    teacher_meta: dict[str, Any] | None  # the teacher checkpoint without its weights
    cache: dict[str, Any] | None  # the teacher cache record of results.json
    data_info: DataInfo


def build_run(cfg: Config, env: D.DistEnv, teacher_ckpt: dict[str, Any] | None, run_dir: Path) -> Run:
    """Loaders (with the teacher cache's targets when one is used), teacher, student, objective and the
    trainer of one run of `cfg.distill.method`; nothing is trained yet."""
    from train.data import build_loaders  # the data pipeline imports the readers; keep --help fast

    method = cfg.distill.method
    check_transfer_set(cfg)
    own = teacher_ckpt is not None and "kind" not in teacher_ckpt  # this project's checkpoint (else a record)
    if teacher_ckpt is not None and not own and teacher_ckpt["kind"] == BACKEND and needs_teacher(method):
        require_features(method, teacher_reads(cfg.distill), str(cfg.distill.teacher))  # before any cache build
    cache = prepare_cache(cfg, env)
    train_loader, val_loader, data_info = build_loaders(cfg, env.distributed, env.rank, env.world,
                                                        targets=cache[0] if cache else None,
                                                        footage_targets=cache[3] if cache else None)
    if own:
        check_same_classes(teacher_ckpt["data"], data_info.to_dict(), f"the teacher {cfg.distill.teacher}",
                           f"the student's dataset ({cfg.data.dataset})")
    teacher = None
    if teacher_ckpt is not None and needs_teacher(method) and cache is None:
        if own:
            teacher, _, _ = model_from_checkpoint(teacher_ckpt, env.device)
            teacher.requires_grad_(False)
        else:  # classes mapped onto the student's (or refused in one sentence) as it loads
            teacher = load_teacher(str(cfg.distill.teacher), data_info.classes, cfg.data.mean, cfg.data.std,
                                   cfg.distill, env.device)
    # keep no second copy of the teacher's weights: it would count in the peak memory
    teacher_meta = {k: v for k, v in teacher_ckpt.items() if k != "model"} if teacher_ckpt else None
    # Seed every module's initialisation (student, adapters, heads, projectors): the same command gives
    # the same run, and every method of a comparison starts from the same student weights.
    seed_everything(cfg.train.seed)
    student = build_model(cfg.model, data_info.num_classes)
    t_info = (cache[1] if cache else None if teacher is None else
              feature_info(teacher) if own else list(getattr(teacher, "feature_info", [])))
    objective = build_objective(cfg.distill, student.feature_info, t_info,
                                data_info.num_classes, parse_budget(cfg.train.budget).is_time,
                                teacher_num_classes=len(teacher_meta["data"]["classes"]) if own and teacher_meta
                                else None)
    trainer = Trainer(cfg, student, objective, train_loader, val_loader, data_info, teacher=teacher,
                      run_dir=run_dir, dist_env=env, method=method, cached_targets=cache is not None)
    return Run(trainer, teacher, teacher_meta, cache[2] if cache else None, data_info)


def _distill(cfg: Config, env: D.DistEnv, method: str, budget: Budget, teacher_ckpt: dict[str, Any] | None,
             run_dir: Path, probe_only: str | Path | None) -> dict[str, Any]:
    run = build_run(cfg, env, teacher_ckpt, run_dir)
    del teacher_ckpt
    trainer = run.trainer
    if probe_only is not None:
        record = trainer.probe(cfg.train.probe_warmup, cfg.train.probe_steps)
        record["teacher_cache"] = run.cache
        if env.is_main:
            atomic_write_json(probe_only, record)
        return record
    if env.is_main and needs_teacher(method) and (classes := checkpoint_class_report(run.teacher_meta)):
        print(classes, flush=True)  # as the teacher's training recorded it: no evaluation here
    probe = resolve_budget(cfg, trainer.probe, env, run_dir)
    trainer.follow_probe(probe, cfg.train.probe_recheck)
    if run.cache is not None and run.cache.get("mode") == "exact":
        # the crops an exact cache holds bound the run: its count must be final before training starts
        from train.teachers.targets import require_exact_samples

        trainer.recheck = None
        require_exact_samples(run.cache["path"], cfg, env.world)
    results = trainer.fit()
    results["probe"] = probe
    results["teacher_cache"] = run.cache
    if env.is_main:
        # after fit(): building the teacher for its summary must not count in the peak memory
        results.update(summaries(trainer.student, run.teacher, run.teacher_meta, cfg.distill.teacher,
                                 run.data_info, results))
        atomic_write_json(run_dir / "results.json", results)
    return results


def summaries(student: nn.Module, teacher: nn.Module | None, teacher_meta: dict[str, Any] | None,
              teacher_path: str | None, data_info: DataInfo, results: dict[str, Any]) -> dict[str, Any]:
    """The `student` and `teacher` blocks of results.json (GFLOPs at the data's input size).
    `teacher_meta` is the teacher checkpoint without its weights (counting needs the architecture only)."""
    size = (int(data_info.input_size[0]), int(data_info.input_size[1]))
    s = {**model_summary(student, size), "miou": results.get("final_miou"), "best_miou": results.get("best_miou"),
         "checkpoint": results.get("best_checkpoint") or results.get("final_checkpoint")}
    t = None
    if teacher_meta is not None and "kind" in teacher_meta:  # a foreign or exported teacher: no recorded mIoU
        t = {"arch": f"{teacher_meta['kind']} teacher {teacher_meta['source']}", "miou": None, "checkpoint": teacher_path,
             "params": sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0,
             "gflops": None}
    elif teacher_meta is not None:
        model = teacher if teacher is not None else build_model(teacher_meta["arch"])
        t = {**model_summary(model, size), "miou": checkpoint_miou(teacher_meta), "checkpoint": teacher_path}
    return {"student": s, "teacher": t}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.distill",
        description="Distil a compact student from a frozen teacher checkpoint with LFD or a canonical method, "
                    "for an iteration or wall-clock budget. Writes runs/<name>/ (best.pt, final.pt: deployable "
                    "student; last.pt: resumable state; log.jsonl; results.json) and prints teacher and student "
                    "mIoU, parameters and GFLOPs. Re-running the same command resumes from last.pt. "
                    "distill.teacher_cache=auto|PATH reads the teacher's targets from a cache (python -m "
                    "train.cache) instead of running the teacher; train.budget_mode=probe turns a wall-clock "
                    "budget into an iteration count from a short probe before training, so the result does "
                    "not depend on the machine's load.",
        epilog="examples:\n"
               "  python -m train.distill --config configs/demo.yaml method=lfd budget=30m "
               "teacher=runs/demo/teacher/best.pt\n"
               "  python -m train.distill --config configs/demo.yaml method=kd+cwd budget=4000 seed=1\n"
               "  python -m train.distill --config configs/demo.yaml method=lfd budget=3m train.budget_mode=probe "
               "distill.teacher_cache=auto teacher=runs/demo/teacher/best.pt\n"
               f"methods: baseline, {', '.join(METHODS)} (combine with '+')",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe YAML under configs/ (default: the built-in defaults)")
    p.add_argument("--probe-only", metavar="JSON",
                   help="time the method's training step instead of training: train.probe_warmup untimed and "
                        "train.probe_steps timed steps on the real data, median s/iter written to JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. method=lfd budget=30m teacher=T.pt seed=1 name=my-run "
                        "distill.lfd.beta=0.3 data.batch_size=4 (short keys: method, teacher, budget, recipe, "
                        "name, seed, lr, batch, dataset)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    parse_method(cfg.distill.method)  # an unknown method fails before any work
    if args.probe_only:
        record = distill(cfg, probe_only=args.probe_only)
        print(f"{cfg.distill.method}: {record['s_per_iter']:.4f} s/iter (median of {record['timed_steps']} steps "
              f"after {record['warmup_steps']} warm-up); wrote {args.probe_only}")
        return 0
    results = distill(cfg)
    if "student" in results:  # rank 0 only
        print(summary_table(results.get("teacher"), results["student"]))
        print(f"{results['iterations']} iterations in {results['elapsed_s']:.1f}s "
              f"({results['s_per_iter']:.3f} s/iter), peak memory {results['peak_mem_mb']:.0f} MB")
        ckpt = results["student"]["checkpoint"]
        print(f"student checkpoint: {ckpt}\nexport it with: python -m export.onnx --checkpoint {ckpt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
