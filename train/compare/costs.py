"""What each method of a comparison costs per training step, measured before its runs (train.compare):
seconds in interleaved rounds (`probe_costs`, train/engine/budget.py `interleaved_costs`) or counted FLOPs
(`count_step_flops`, `exact_step_flops`), a cache build's FLOPs (`cache_build_flops`), and the iteration
count each run's budget buys (train/engine/budget.py `resolve_counts`). Each method is measured on a Trainer built as its run
would be, from the `Config` the comparison gives it; a measurement is kept in `<out>/probes.json` or
`<out>/flops.json` and reused when it covers the methods."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime.errors import UserError
from runtime.io import atomic_write_json
from train.config import Config


def reference_of(methods: Sequence[str]) -> str:
    """The method every cost is a ratio to: `baseline` when compared, else the first."""
    return "baseline" if "baseline" in methods else methods[0]


def build_trainers(configs: dict[str, Config], folder: Path) -> dict[str, Any]:
    """One Trainer per method, built from its run's config as its run would be (writing under
    `<folder>/<method>/`), for measuring step costs; nothing is trained."""
    from train.distill import build_run, read_teacher
    from train.engine import distributed as D

    first = next(iter(configs.values()))
    env = D.DistEnv(device=D.resolve_device(first.train.device))
    return {m: build_run(cfg, env, read_teacher(cfg.distill.teacher, m), folder / m).trainer
            for m, cfg in configs.items()}


def _measured(path: Path, configs: dict[str, Config], measure: Callable[[dict[str, Any], str], dict[str, dict[str, Any]]]
              ) -> dict[str, dict[str, Any]]:
    """The record at `path` when it covers every method of `configs`; else `measure(trainers, reference)`
    on freshly built trainers (under `<path without suffix>/`), written to `path`."""
    methods = list(configs)
    if path.is_file():
        prior = json.loads(path.read_text())
        if set(methods) <= set(prior):
            return {m: prior[m] for m in methods}
    record = measure(build_trainers(configs, path.with_suffix("")), reference_of(methods))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return record


def probe_costs(configs: dict[str, Config], out: Path, tolerance: float = 0.03, max_seconds: float = 120.0
                ) -> dict[str, dict[str, Any]]:
    """Every method's seconds per iteration, measured in this process in interleaved rounds on the same
    batches (train/engine/budget.py `interleaved_costs`), as ratios to the reference; `<out>/probes.json`."""
    from train.engine.budget import interleaved_costs
    from train.torch_env import torch_environment

    def measure(trainers: dict[str, Any], reference: str) -> dict[str, dict[str, Any]]:
        t = trainers[reference].cfg.train
        print(f"[compare] timing {', '.join(trainers)} against {reference} in interleaved rounds "
              f"(±{100 * tolerance:g} % wanted, at most {max_seconds:g}s)", flush=True)
        # a loader prefetches workers x prefetch_factor (2) batches while the other methods run: drain them
        costs = interleaved_costs(lambda m: trainers[m].timed_step(), list(trainers), reference,
                                  warmup=max(1, t.probe_warmup), per_round=max(1, min(t.probe_steps, 2)),
                                  tolerance=tolerance, max_seconds=max_seconds,
                                  drain=2 * trainers[reference].cfg.data.workers)
        env_record = torch_environment(trainers[reference].device)
        return {m: {**rec, "env": env_record} for m, rec in costs.items()}

    return _measured(out / "probes.json", configs, measure)


def count_step_flops(configs: dict[str, Config], out: Path) -> dict[str, dict[str, Any]]:
    """Every method's counted FLOPs per training step (train/models/flops.py `counted_flops`: one warm-up step,
    then two counted steps, which must agree), and the ratio to the reference; `<out>/flops.json`."""
    from train.models.flops import counted_flops

    def measure(trainers: dict[str, Any], reference: str) -> dict[str, dict[str, Any]]:
        per: dict[str, int] = {}
        for m, trainer in trainers.items():
            trainer.timed_step()  # lazy initialisation outside the count
            counts = [counted_flops(trainer.timed_step) for _ in range(2)]
            if abs(counts[0] - counts[1]) > 1e-6 * max(counts):
                raise UserError(f"method {m} counted {counts[0]} and then {counts[1]} FLOPs in two training steps: "
                                f"its step cost depends on the batch, so --match flops cannot resolve it; use "
                                f"--match probe")
            if counts[0] <= 0:
                raise UserError(f"no FLOPs were counted in a training step of {m}; use --match probe")
            per[m] = counts[0]
        return {m: {"method": m, "step_flops": f, "ratio": f / per[reference], "reference": reference}
                for m, f in per.items()}

    return _measured(out / "flops.json", configs, measure)


def exact_step_flops(online: dict[str, Config], cached: list[str], teacher: str, out: Path
                     ) -> dict[str, dict[str, Any]]:
    """Step FLOPs with an exact cache (--match flops): each method counted with the online teacher (the
    `online` configs), whose forward on the batch, f_T, is then replaced by its share of the exact cache's
    forward on the same crops, stored once per seed for the R = len(cached) methods that read it:

        f_m = f_m,online − f_T + f_T / R."""
    from train.models.flops import forward_flops

    flops = count_step_flops(online, out)
    cfg = next(iter(online.values()))
    data = cfg.data
    model = _teacher_module(teacher, cfg)
    f_t = forward_flops(model, (data.batch_size, 3, *data.crop_size))
    reference = next(iter(flops.values()))["reference"]
    for m in cached:
        rec = flops[m]
        rec["online_step_flops"] = rec["step_flops"]
        rec["step_flops"] = rec["step_flops"] - f_t + f_t / len(cached)
        rec["teacher_forward_flops"] = f_t
    for rec in flops.values():
        rec["ratio"] = rec["step_flops"] / flops[reference]["step_flops"]
    return flops


def _teacher_module(teacher: str, cfg: Config | None) -> Any:
    """The teacher as a module whose forward can be counted: this project's checkpoint, or a foreign teacher
    mapped onto the classes of `cfg`'s data (train/teachers/source.py)."""
    from train.engine.checkpoint import model_from_checkpoint
    from train.teachers.source import CHECKPOINT, load_teacher, teacher_kind

    if teacher_kind(teacher) == CHECKPOINT or cfg is None:
        return model_from_checkpoint(teacher, "cpu")[0]
    from train.data import build_readers

    d = cfg.data
    return load_teacher(teacher, build_readers(d)[0].classes, d.mean, d.std, cfg.distill, "cpu")


def cache_build_flops(path: str, teacher: str, cfg: Config | None = None) -> int:
    """Counted FLOPs of building the teacher cache at `path`: the manifest's `build_flops` when recorded,
    else one teacher forward per training image at its stored view size."""
    from collections import Counter

    from train.models.flops import forward_flops
    from train.teachers.cache_format import image_sizes, read_manifest

    manifest = read_manifest(path) or {}
    if manifest.get("build_flops"):
        return int(manifest["build_flops"])
    model = _teacher_module(teacher, cfg)
    sizes = Counter(image_sizes(manifest))
    return sum(n * forward_flops(model, (1, 3, *size)) for size, n in sizes.items())
