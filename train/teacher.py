"""`python -m train.teacher --config configs/X.yaml [key=value ...]`: train a segmentation model with the
task loss alone (CE + 0.4 x auxiliary CE), typically the teacher that distillation then reads.

The model is the config's `teacher_model` section when it has one (else `model`; `--which` chooses),
trained on `data` for `train.budget` by the shared engine (train/engine/trainer.py). The run folder
`runs/<name>/` (default name `teacher-<recipe>-s<seed>`) receives best.pt (best validation mIoU,
deployable), final.pt, last.pt (resumable: re-running the command continues), log.jsonl and
results.json; the command prints the validation mIoU, parameters and GFLOPs.
Under torchrun (`torchrun --nproc-per-node 2 -m train.teacher ...`) it trains with DDP.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_json
from train.config import Config, ModelConfig, load_config
from train.engine import distributed as D
from train.engine.run_lock import run_lock


def teacher_model_config(cfg: Config, which: str = "auto") -> ModelConfig:
    """`teacher_model` (which=teacher, or auto when the config has one) or `model` (which=student)."""
    if which == "teacher" and cfg.teacher_model is None:
        raise UserError("--which teacher: the config has no teacher_model section; add one (teacher_model: "
                        "{recipe: deeplabv3_resnet50}) or pass teacher_model.recipe=...")
    if which == "student" or cfg.teacher_model is None:
        return cfg.model
    return cfg.teacher_model


def train_teacher(cfg: Config, which: str = "auto") -> dict[str, Any]:
    """Train the chosen model with TaskLoss; returns results.json (engine results + `model` summary)."""
    model_cfg = teacher_model_config(cfg, which)
    cfg.train.name = cfg.train.name or f"teacher-{model_cfg.recipe}-s{cfg.train.seed}"
    run_dir = Path(cfg.train.runs_dir) / cfg.train.name
    env = D.init_distributed(cfg.train.device)
    try:
        with run_lock(run_dir, env):
            return _train(cfg, env, model_cfg, run_dir)
    finally:
        D.cleanup()


def _train(cfg: Config, env: D.DistEnv, model_cfg: ModelConfig, run_dir: Path) -> dict[str, Any]:
    from train.data import build_loaders
    from train.engine.budget import resolve_budget
    from train.engine.trainer import Trainer
    from train.losses.task import TaskLoss
    from train.models import build_model, model_summary

    train_loader, val_loader, data_info = build_loaders(cfg, env.distributed, env.rank, env.world)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank and every run
    model = build_model(model_cfg, data_info.num_classes)
    trainer = Trainer(cfg, model, TaskLoss(), train_loader, val_loader, data_info, run_dir=run_dir,
                      dist_env=env, method="teacher")
    probe = resolve_budget(cfg, trainer.probe, env, run_dir)
    trainer.follow_probe(probe, cfg.train.probe_recheck)
    results = trainer.fit()
    results["probe"] = probe
    if env.is_main:
        results["model"] = model_summary(trainer.student, tuple(data_info.input_size))
        atomic_write_json(run_dir / "results.json", results)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.teacher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m train.teacher --config configs/demo.yaml\n"
               "  python -m train.teacher --config configs/cityscapes.yaml budget=40000 name=t-r101\n"
               "  python -m train.teacher recipe=tiny_deeplabv3_resnet10t budget=200 --which student")
    p.add_argument("--config", help="recipe YAML under configs/ (default: the built-in defaults)")
    p.add_argument("--which", choices=("auto", "teacher", "student"), default="auto",
                   help="model section to train: teacher = teacher_model, student = model, auto (default) = "
                        "teacher_model when the config has one, else model")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. budget=30m seed=1 name=my-teacher teacher_model.recipe="
                        "deeplabv3_resnet50 data.batch_size=4 optim.lr=0.01 train.resume=false")
    return p


def describe_scores(best: float | None, final: float | None) -> str:
    """'val mIoU 31.20 (best), 30.85 (final)', or why there is no score (no validation, or no valid pixel)."""
    if final is None:
        return "no validation"
    if best is None or math.isnan(final):
        return "no validation score (no labelled pixel in the validation images), so no best.pt"
    return f"val mIoU {100 * best:.2f} (best), {100 * final:.2f} (final)"


def teacher_class_report(results: dict[str, Any]) -> str | None:
    """The per-class IoU table of the checkpoint the command points to (best.pt, else final.pt), with a
    warning naming the classes at 0 IoU; None without validation scores."""
    from train.teachers.class_scores import class_iou_report

    best = results.get("best_checkpoint") is not None
    per_class = results.get("best_per_class_iou" if best else "final_per_class_iou")
    if not per_class:
        return None
    which = f"best, iteration {results['best_iteration']}" if best else "final"
    return class_iou_report(per_class, f"per-class val IoU % ({which}):", who="teacher")


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    results = train_teacher(cfg, args.which)
    if "model" in results:  # rank 0
        m = results["model"]
        scores = describe_scores(results["best_miou"], results["final_miou"])
        print(f"{m['arch']}: {scores}; {m['params'] / 1e6:.2f} M parameters, {m['gflops']:.3g} GFLOPs at "
              f"{m['gflops_size'][0]}x{m['gflops_size'][1]}")
        print(f"{results['iterations']} iterations in {results['elapsed_s']:.1f}s ({results['s_per_iter']:.3f} "
              f"s/iter), peak memory {results['peak_mem_mb']:.0f} MB")
        ckpt = results["best_checkpoint"] or results["final_checkpoint"]
        report = teacher_class_report(results)
        if report:
            print(report)
        print(f"teacher checkpoint: {ckpt}\ndistil with: python -m train.distill --config ... teacher={ckpt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
