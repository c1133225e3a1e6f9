"""Budget-matched comparison of distillation methods (docs/methods.md, "Budget-matched comparison"):

    python -m train.compare --config configs/compare.yaml --teacher T.pt \\
        --methods baseline,kd,cwd,fitnet,at,lfd,fkd --budget 10m --seeds 2 --out runs/compare

Every method gets the same budget, data order, seeds and initial student weights: seed index i runs with
`train.seed = seed + i` for every method.

A wall-clock budget is resolved before training (`--match probe`, the default; train/engine/budget.py): a teacher
target cache is built once when a method reads the teacher (`--teacher-cache auto`), every method's step
is timed in this one process, in interleaved rounds on the same batches after a warm-up, until each cost
ratio to the baseline is known within ±`--probe-tolerance` (95 % interval, reported), and each run then
trains for exactly `floor(seconds / s_per_iter)` iterations. After the runs, the training seconds each
actually spent (plus its share of the cache build) are checked against the baseline's: outside ±5 % the
report carries a warning. The cache's build
time counts: amortised over every run that reads it (`seconds = budget − cache / runs`), and, with
`--charge both` (default), also charged in full to one more run per method and seed (`<method>-charged`),
so the table gives the gap closed both ways. `compare.json` records the probes, the cache cost and the
resolved counts; `--resolved compare.json` replays those counts on any machine. `--match wallclock` runs
the budget live, as a clock, instead. Each (method, seed) is one `python -m train.distill` subprocess (so peak memory is
measured per method) writing `<out>/<config stem>-<method>-s<seed>/`; a run whose results.json exists is
skipped and an interrupted one resumes from its last.pt, so re-running the command continues a comparison.

Per method the report gives the final validation mIoU (the weights at the end of the budget; choosing
the best validation point would select on the evaluation split) as mean ± sample std over seeds, iterations
reached, seconds per iteration, peak memory (GPU allocator peak, or peak RSS on CPU; the max over seeds)
and the share of the teacher-student gap closed,

    gap = (mIoU_method - mIoU_baseline) / (mIoU_teacher - mIoU_baseline),

with the teacher scored by the engine's own validation on the same split. Outputs: compare.json,
compare.md and compare.png (validation mIoU against the budget clock, one line per seed) in `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.errors import UserError, cli_main, sigterm_as_interrupt
from runtime.io import atomic_write_json, atomic_write_text
from train.compare.costs import (
    cache_build_flops,
    count_step_flops,
    exact_step_flops,
    probe_costs,
)
from train.compare.report import (
    markdown_report,
    plot_curves,
    read_val_curve,
    spent_warnings,
    summarize,
    table,
)
from train.config import ALIASES, Config, load_config
from train.engine.budget import parse_budget, resolve_counts
from train.engine.child_process import run_child, wait_for_folder
from train.losses import needs_teacher, parse_method

RESERVED = ("distill.method", "train.budget", "train.seed", "train.name", "distill.teacher", "train.runs_dir",
            "train.iterations", "train.budget_mode", "distill.teacher_cache")


def run_name(stem: str, method: str, seed: int) -> str:
    return f"{stem}-{method}-s{seed}"


def default_val_every(budget: str, points: int = 10) -> str:
    """A validation period that gives about `points` points per curve: budget / points (same form)."""
    b = parse_budget(budget)
    if b.is_time:
        return f"{float(b.seconds or 0) / points:g}s"
    return str(max(1, (b.iterations or 0) // points))


def run_overrides(config: str | None, method: str, seed: int, budget: str, teacher: str | None, out: Path,
                  val_every: str, overrides: Sequence[str], iterations: int | None = None,
                  cache: str | None = None, name: str | None = None) -> list[str]:
    """The config overrides of one run (the comparison's keys come last and win). `iterations`: the count a
    wall-clock budget resolved to; `cache`: the teacher cache folder."""
    keys = [*overrides, f"method={method}", f"budget={budget}", f"seed={seed}", f"train.runs_dir={out}",
            f"train.val_every={val_every}", f"name={name or run_name(stem_of(config), method, seed)}"]
    if not needs_teacher(method) and load_config(config, list(overrides)).data.unlabeled:
        # the student alone learns from the labels only: the transfer set is for the teacher-reading methods
        keys += ["data.unlabeled=[]", "distill.pseudo_labels=false"]
    if iterations is not None:
        keys += ["train.budget_mode=probe", f"train.iterations={iterations}"]
    if teacher:
        keys.append(f"teacher={teacher}")
    if cache and needs_teacher(method):
        keys.append(f"distill.teacher_cache={cache}")
    return keys


def distill_command(config: str | None, method: str, seed: int, budget: str, teacher: str | None,
                    out: Path, val_every: str, overrides: Sequence[str], iterations: int | None = None,
                    cache: str | None = None, name: str | None = None) -> list[str]:
    """The `python -m train.distill` command line of one run (`run_overrides`)."""
    cmd = [sys.executable, "-m", "train.distill"] + (["--config", config] if config else [])
    return cmd + run_overrides(config, method, seed, budget, teacher, out, val_every, overrides, iterations,
                               cache, name)


def method_configs(config: str | None, methods: list[str], seed: int, budget: str, teacher: str | None, out: Path,
                   overrides: list[str], cache: str | None) -> dict[str, Config]:
    """Each method's run config for seed `seed` (what its cost is measured on)."""
    return {m: load_config(config, run_overrides(config, m, seed, budget, teacher, out, "0", overrides, cache=cache))
            for m in methods}


def stem_of(config: str | None) -> str:
    return Path(config).stem if config else "default"


def teacher_miou_on(cfg: Config, teacher: str, out: Path) -> float:
    """The teacher's mIoU on `cfg`'s validation split, scored by the engine's own `validate` (same
    transforms, precision and resizing as the students); cached in `<out>/teacher.json` with its per-class
    IoU, whose table is printed (with a warning naming the classes at 0 IoU)."""
    from train.teachers.class_scores import class_iou_report

    cache = out / "teacher.json"
    rec = json.loads(cache.read_text()) if cache.is_file() else {}
    if rec.get("teacher") != str(teacher):
        from train.data import build_loaders
        from train.engine.checkpoint import check_same_classes, model_from_checkpoint
        from train.engine.trainer import Trainer
        from train.losses import TaskLoss
        from train.teachers.source import CHECKPOINT, load_teacher, teacher_kind

        train_loader, val_loader, data_info = build_loaders(cfg, False, 0, 1)
        if teacher_kind(teacher) == CHECKPOINT:
            model, info, _ = model_from_checkpoint(teacher, "cpu")
            check_same_classes(info.to_dict(), data_info.to_dict(), f"the teacher {teacher}",
                               f"the dataset ({cfg.data.dataset})")
        else:  # scored on the student's classes, through its class map
            model = load_teacher(teacher, data_info.classes, cfg.data.mean, cfg.data.std, cfg.distill, "cpu")
        trainer = Trainer(cfg, model, TaskLoss(), train_loader, val_loader, data_info, run_dir=out / "teacher-eval")
        metrics = trainer.validate()
        rec = {"teacher": str(teacher), "miou": metrics["mIoU"], "per_class_iou": metrics["per_class_iou"],
               "metrics": metrics}
        atomic_write_json(cache, rec)
    per_class = rec.get("per_class_iou") or (rec.get("metrics") or {}).get("per_class_iou")
    if per_class:
        print(class_iou_report(per_class, f"[compare] teacher per-class val IoU % (mIoU "
                                          f"{100 * float(rec['miou']):.2f}):"), flush=True)
    return float(rec["miou"])


def build_comparison_cache(cfg: Config, config: str | None, overrides: list[str], methods: list[str],
                           teacher: str, mode: str, seeds: Sequence[int] = (0,), iteration_budget: bool = False
                           ) -> tuple[str | None, float, bool]:
    """(cache folder, its build seconds, built now) holding what every method of the comparison reads;
    (None, 0, False) when no method reads the teacher or the cache is off.

    An exact cache (distill.cache_mode=exact) holds one seed's crops: one is built per seed, for an
    iteration budget only (the samples a run reads must be known before it starts), and the runs get
    `auto`, which finds the folder of their seed; the build seconds are summed over seeds. With a transfer
    set (data.unlabeled) its cache is built too (`footage_cache`) and its seconds are added."""
    from train.losses import teacher_reads
    from train.teachers.targets import open_cache

    reads: list[str] = []
    for m in methods:
        if needs_teacher(m):
            reads += teacher_reads(load_config(config, [*overrides, f"method={m}"]).distill)
    if mode == "off" or not reads:
        return None, 0.0, False
    cfg.distill.teacher_cache = mode
    footage_s, footage_built = 0.0, False
    if cfg.data.unlabeled:
        _, f_manifest, footage_built = footage_cache(cfg, teacher, list(dict.fromkeys(reads)), build=True)
        footage_s = float(f_manifest.get("build_seconds") or 0.0)
    if cfg.distill.cache_mode == "exact":
        if not iteration_budget:
            raise UserError("an exact teacher cache holds the crops of a known number of iterations: compare with "
                            "it at an iteration budget (--budget 200), or use distill.cache_mode=single or "
                            "multiscale with a wall-clock or --match flops budget")
        if mode != "auto":
            raise UserError("an exact teacher cache is built per seed: pass --teacher-cache auto")
        total, any_built, first = 0.0, False, cfg.train.seed
        for seed in seeds:
            cfg.train.seed = seed
            _, manifest, built = open_cache(cfg, teacher, list(dict.fromkeys(reads)), build=True)
            total += float(manifest.get("build_seconds") or 0.0)
            any_built = any_built or built
        cfg.train.seed = first
        return "auto", total + footage_s, any_built or footage_built
    path, manifest, built = open_cache(cfg, teacher, list(dict.fromkeys(reads)), build=True)
    return str(path), float(manifest.get("build_seconds") or 0.0) + footage_s, built or footage_built


def footage_cache(cfg: Config, teacher: str, reads: list[str], build: bool = False
                  ) -> tuple[Path, dict[str, Any], bool]:
    """The transfer set's teacher cache as the comparison's runs open it (train.distill `prepare_cache`)."""
    from train.distill import footage_cache_config
    from train.teachers.targets import open_cache

    fcfg = footage_cache_config(cfg)
    assert fcfg is not None
    return open_cache(fcfg, teacher, reads, build=build, footage=True)


def compare(config: str | None, methods: list[str], budget: str, seeds: int, teacher: str | None, out: Path,
            overrides: list[str], val_every: str | None = None, match: str = "probe",
            resolved: str | Path | None = None, teacher_cache: str = "auto", charge: str = "both",
            probe_tolerance: float = 0.03, probe_seconds: float = 120.0) -> dict[str, Any]:
    """Run (or resume) every method x seed, then write compare.json, compare.md and compare.png."""
    for m in methods:
        parse_method(m)
    b = parse_budget(budget)
    if match not in ("probe", "wallclock", "flops"):
        raise UserError(f"--match {match}: choose probe, wallclock or flops")
    if match == "flops" and b.is_time:
        raise UserError(f"--match flops counts compute, not seconds: give --budget as a number of baseline "
                        f"iterations (e.g. --budget 200: every run gets the FLOPs of 200 baseline steps), not {budget}")
    if charge not in ("both", "amortised"):
        raise UserError(f"--charge {charge}: choose both or amortised")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if ALIASES.get(key, key) in RESERVED:
            raise UserError(f"override '{item}' is set by the comparison; use --methods, --budget, --seeds, "
                            f"--teacher or --out instead")
    if teacher_cache == "off":  # the online teacher in every run and cost measurement, whatever the config says
        overrides = [*overrides, "distill.teacher_cache=off"]
    cfg = load_config(config, overrides)
    teacher = teacher or cfg.distill.teacher
    if teacher is None and any(m != "baseline" for m in methods):
        raise UserError("distillation methods need a teacher: pass --teacher path/to/teacher.pt")
    if teacher is not None:
        from train.teachers.source import check_teacher

        check_teacher(teacher)
    seed_values = [cfg.train.seed + i for i in range(seeds)]
    cfg.train.budget = budget  # what an exact cache's sample count is computed from
    budget_text = str(b)
    probe_budget = b.is_time and match == "probe"
    flops_budget = match == "flops"

    # an exact cache with --match flops is built after the counts: the crops it holds depend on them
    deferred = (flops_budget and teacher is not None and teacher_cache != "off" and cfg.distill.cache_mode == "exact"
                and resolved is None)
    cache, cache_s, cache_built = (build_comparison_cache(cfg, config, overrides, methods, teacher, teacher_cache,
                                                          seed_values, not b.is_time and not flops_budget)
                                   if teacher is not None and not deferred else (None, 0.0, False))
    cached = [m for m in methods if (cache or deferred) and needs_teacher(m)]
    if cache:
        print(f"[compare] teacher cache {cache}: {'built' if cache_built else 'reused'}, build time "
              f"{cache_s:.1f}s, read by {', '.join(cached)}", flush=True)

    probes: dict[str, dict[str, Any]] = {}
    flops: dict[str, dict[str, Any]] = {}
    cache_flops = 0
    counts: dict[str, dict[str, int]] = {}
    runs_sharing = max(1, len(cached) * len(seed_values))
    if resolved is not None:
        prior = json.loads(Path(resolved).read_text())
        counts = {m: {k: int(v) for k, v in c.items()} for m, c in (prior.get("resolved") or {}).items()}
        probes = prior.get("probes") or {}
        flops = prior.get("flops") or {}
        if (prior.get("match") == "flops") != flops_budget:
            raise UserError(f"{resolved} resolved its counts with --match {prior.get('match')}; replay it with the "
                            f"same --match and --budget")
        cache_flops = int(prior.get("cache_flops") or 0)
        missing = [m for m in methods if m not in counts]
        if missing:
            raise UserError(f"{resolved} resolves no iteration count for {', '.join(missing)}; rerun the "
                            f"comparison without --resolved, or drop those methods")
    elif probe_budget:
        probes = probe_costs(method_configs(config, methods, seed_values[0], budget, teacher, out, overrides, cache),
                             out, probe_tolerance, probe_seconds)
        for m, p in probes.items():
            print(f"[compare] {m}: {p['s_per_iter']:.3f} s/iter, {p['ratio']:.3f}x {p['reference']} "
                  f"(95 % interval {p['ratio_low']:.3f}-{p['ratio_high']:.3f}, {p['rounds']} rounds)", flush=True)
        counts = resolve_counts({m: p["s_per_iter"] for m, p in probes.items()}, float(b.seconds or 0),
                                cache_s, cached, runs_sharing)
    elif flops_budget:
        from train.models.flops import format_flops

        if deferred:
            assert teacher is not None
            online = method_configs(config, methods, seed_values[0], budget, teacher, out,
                                    [*overrides, "distill.teacher_cache=off"], None)
            flops = exact_step_flops(online, cached, teacher, out)
        else:
            flops = count_step_flops(method_configs(config, methods, seed_values[0], budget, teacher, out,
                                                    overrides, cache), out)
        cache_flops = cache_build_flops(cache, teacher, cfg) if cache and teacher else 0
        if cache and teacher and cfg.data.unlabeled:  # the transfer set's cache is charged as the labeled one
            from train.losses import teacher_reads

            reads = list(dict.fromkeys(o for m in cached for o in teacher_reads(
                load_config(config, [*overrides, f"method={m}"]).distill)))
            cache_flops += cache_build_flops(str(footage_cache(cfg, teacher, reads)[0]), teacher, cfg)
        reference = next(iter(flops.values()))["reference"]
        total = float(b.iterations or 0) * flops[reference]["step_flops"]
        for m, f in flops.items():
            print(f"[compare] {m}: {format_flops(f['step_flops'])} per step, {f['ratio']:.3f}x {reference}",
                  flush=True)
        print(f"[compare] budget {format_flops(total)} per run ({b.iterations} {reference} steps)"
              + (f"; cache build {format_flops(cache_flops)}, {format_flops(cache_flops / runs_sharing)} per run "
                 f"that reads it" if cache_flops else ""), flush=True)
        counts = resolve_counts({m: float(f["step_flops"]) for m, f in flops.items()}, total, float(cache_flops),
                                [] if deferred else cached, runs_sharing)
        if deferred:  # the exact caches, one per seed, holding the crops of the longest run
            assert teacher is not None
            cfg.train.budget = str(max(counts[m]["amortised"] for m in cached))
            cache, cache_s, cache_built = build_comparison_cache(cfg, config, overrides, methods, teacher,
                                                                 teacher_cache, seed_values, True)
            print(f"[compare] exact teacher caches (one per seed): {'built' if cache_built else 'reused'}, build "
                  f"time {cache_s:.1f}s, read by {', '.join(cached)}", flush=True)
    if counts:
        print("[compare] iterations per run: " + ", ".join(
            f"{m} {c['amortised']}" + (f" (charged {c['charged']})" if "charged" in c else "")
            for m, c in counts.items()), flush=True)

    def plan(method: str, seed: int) -> list[tuple[str, str, int | None]]:
        """(run name, accounting, iterations) of the runs of one method and seed."""
        name = run_name(stem_of(config), method, seed)
        if not counts:
            return [(name, "amortised", None)]
        c = counts[method]
        runs: list[tuple[str, str, int | None]] = [(name, "amortised", c["amortised"])]
        if charge == "both" and "charged" in c:
            runs.append((run_name(stem_of(config), f"{method}-charged", seed), "charged", c["charged"]))
        return runs

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    charged: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    curves: dict[str, list[list[tuple[float, float]]]] = {m: [] for m in methods}
    failed = []
    for seed in seed_values:
        for method in methods:
            for name, accounting, iterations in plan(method, seed):
                run_dir = out / name
                results_path = run_dir / "results.json"
                period = (str(max(1, iterations // 10)) if iterations is not None and not val_every
                          else val_every or default_val_every(budget))
                # --match flops: each run is an iteration budget of its own count; probe: a resolved time budget
                run_budget, run_iterations = (str(iterations), None) if flops_budget else (budget, iterations)
                expected = str(parse_budget(run_budget))
                if results_path.is_file():
                    print(f"[compare] {name}: finished earlier, reusing {results_path}", flush=True)
                else:
                    print(f"[compare] {name}: running" + (f" {iterations} iterations" if iterations else ""),
                          flush=True)
                    cmd = distill_command(config, method, seed, run_budget, teacher, out, period, overrides,
                                          run_iterations, cache, name)
                    wait_for_folder(run_dir)
                    try:
                        rc = run_child(cmd)
                    except KeyboardInterrupt:
                        stopped(out, [n for s_ in seed_values for m in methods for n, _, _ in plan(m, s_)], name)
                        raise
                    if rc != 0 or not results_path.is_file():
                        failed.append({"method": method, "seed": seed, "run": name, "exit_code": rc,
                                       "command": cmd})
                        print(f"[compare] {name} failed with exit code {rc}; continuing", flush=True)
                        continue
                result = json.loads(results_path.read_text())
                if result.get("budget") != expected or (
                        run_iterations is not None and result.get("resolved_iterations") != run_iterations):
                    raise UserError(f"{results_path} is a run with budget {result.get('budget')} "
                                    f"({result.get('resolved_iterations')} iterations), not {expected} "
                                    f"({iterations}); pass another --out for a new comparison")
                (charged if accounting == "charged" else runs)[method].append({**result, "seed": seed})
                if accounting == "amortised" and flops_budget:  # against counted compute, in TFLOP
                    f, share = flops[method]["step_flops"], (cache_flops / runs_sharing if method in cached else 0)
                    curves[method].append([((i * f + share) / 1e12, v)
                                           for i, v in read_val_curve(run_dir / "log.jsonl", "iteration")])
                elif accounting == "amortised":
                    curves[method].append(read_val_curve(run_dir / "log.jsonl"))

    t_miou = teacher_miou_on(cfg, teacher, out) if teacher is not None else None
    rows = summarize({m: r for m, r in runs.items() if r}, t_miou, charged=charged,
                     probes={m: p["s_per_iter"] for m, p in probes.items()},
                     cache_seconds={m: cache_s for m in cached}, costs=probes,
                     runs_sharing=runs_sharing, step_flops={m: f["step_flops"] for m, f in flops.items()},
                     cache_flops={m: cache_flops for m in cached} if flops else None,
                     check=b.is_time or flops_budget)
    match_text = "flops" if flops_budget else "probe" if probe_budget else "wallclock" if b.is_time else "iterations"
    report = {
        "config": config,
        "budget": budget_text,
        "match": match_text,
        "val_every": val_every,
        "seeds": seed_values,
        "teacher": {"checkpoint": teacher, "miou": t_miou},
        "teacher_cache": {"path": cache, "build_seconds": cache_s, "built_now": cache_built, "read_by": cached,
                          "runs_sharing": len(cached) * len(seed_values)} if cache else None,
        "probes": probes,
        "flops": flops,
        "cache_flops": cache_flops,
        "resolved": counts,
        "methods": rows,
        "runs": {m: [{k: r.get(k) for k in ("seed", "run_dir", "final_miou", "best_miou", "iterations",
                                              "elapsed_s", "s_per_iter", "peak_mem_mb")} for r in rs]
                 for m, rs in {**runs, **{f"{k}-charged": v for k, v in charged.items() if v}}.items()},
        "failed": failed,
        "env": next((r["env"] for rs in runs.values() for r in rs if "env" in r), None),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", report)
    atomic_write_text(out / "compare.md", markdown_report(rows, t_miou, budget, seeds, match_text))
    plot_curves({m: c for m, c in curves.items() if c}, t_miou, out / "compare.png",
                f"{stem_of(config)}: {budget_text} per run" + (" (FLOP-matched)" if flops_budget else ""),
                "counted compute (TFLOP, cache build shared)" if flops_budget else "training time (s, budget clock)")
    return report


def sweep_main(args: argparse.Namespace, methods: list[str], out: Path) -> int:
    """--budgets: one comparison per budget (train/compare/sweep.py), then the sweep's table and plot."""
    from train.compare.sweep import parse_budgets, sweep, sweep_table
    from train.engine.run_lock import run_lock

    budgets = parse_budgets(args.budgets)

    def run_one(budget: str, folder: Path) -> dict[str, Any]:
        return compare(args.config, methods, budget, args.seeds, args.teacher, folder, args.overrides,
                       args.val_every, args.match, None, args.teacher_cache, args.charge, args.probe_tolerance,
                       args.probe_seconds)

    with sigterm_as_interrupt(), run_lock(out, hint="--out"):
        result = sweep(budgets, out, run_one, args.seeds, f"{stem_of(args.config)}: {', '.join(methods)}")
    print(f"\nmIoU (%) by budget ({result['unit']}); Δ to the baseline, ✓ beyond 2 pooled seed std")
    print(sweep_table(result["rows"]))
    for f in result["failed"]:
        print(f"failed: {f['method']} seed {f['seed']} (exit code {f['exit_code']}): {' '.join(f['command'])}")
    print(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
    return 1 if result["failed"] else 0


def stopped(out: Path, names: list[str], current: str) -> None:
    """The line printed when a signal stops the comparison: which runs are finished, and how to continue."""
    done = [n for n in names if (out / n / "results.json").is_file()]
    saved = (out / current / "last.pt").is_file()
    print(f"[compare] stopped: {len(done)} of {len(names)} runs finished"
          + (f" ({', '.join(done)})" if done else "") + f"; {current} was interrupted"
          + (" and saved last.pt" if saved else "") + "; run the same command to continue", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.compare",
        description="Run every distillation method with the same budget, data order and seeds (one "
                    "train.distill subprocess per method and seed), then report mIoU mean ± std, iterations, "
                    "s/iter, peak memory and the share of the teacher-student gap closed as compare.json, "
                    "compare.md and a compare.png of validation mIoU against training time. Finished runs are "
                    "reused, interrupted ones resume: re-run the same command to continue.",
        epilog="example:\n  python -m train.compare --config configs/compare.yaml --teacher runs/demo/teacher/best.pt "
               "--methods baseline,kd,cwd,fitnet,at,lfd,fkd --budget 10m --seeds 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe YAML for every run (data, student model, optimiser)")
    p.add_argument("--methods", default="baseline,kd,cwd,fitnet,at,lfd,fkd",
                   help="comma-separated methods; '+' combines methods in one run (e.g. baseline,kd,kd+cwd,lfd); "
                        "include 'baseline' for the gap-closed column (default: %(default)s)")
    p.add_argument("--budget",
                   help="per-run budget: iterations (4000) or wall-clock (90s, 10m, 2h); with --match flops, the "
                        "number of baseline iterations whose FLOPs every run gets")
    p.add_argument("--budgets", metavar="B1,B2,...",
                   help="a budget sweep instead of --budget: every method at each budget (increasing, e.g. "
                        "1m,2m,4m,8m, or 100,200,400 with --match flops), one teacher cache and one cost "
                        "measurement, each budget in <out>/budget-<b>/; adds sweep.json, sweep.md (mIoU by budget "
                        "and method, where each beats the baseline by more than 2 seed std) and sweep.png (mIoU "
                        "against compute, seed spread shaded, crossings of the baseline marked)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per method: train.seed, +1, ... (default 1)")
    p.add_argument("--teacher", help="teacher checkpoint (default: distill.teacher of the config)")
    p.add_argument("--out", help="comparison folder (default: runs/compare-<config stem>-<budget>)")
    p.add_argument("--val-every", help="validation period of each run, iterations or wall-clock "
                                       "(default: a tenth of the budget, i.e. 10 points per curve)")
    p.add_argument("--match", default="probe", choices=("probe", "wallclock", "flops"),
                   help="how compute is matched: probe (default, wall-clock budget) times each method's step first "
                        "and trains every run for the iterations its budget buys; wallclock runs the budget live as "
                        "a clock; flops (budget in baseline iterations, e.g. 200) gives every run the counted FLOPs "
                        "of that many baseline steps (teacher forward counted, cache build shared), the same on "
                        "any machine")
    p.add_argument("--probe-tolerance", type=float, default=0.03, metavar="FRACTION",
                   help="--match probe: time the methods in interleaved rounds until each one's cost ratio to the "
                        "baseline is known within this fraction (95 %% interval; default %(default)s)")
    p.add_argument("--probe-seconds", type=float, default=120.0, metavar="S",
                   help="--match probe: stop the interleaved timing after this many seconds even if the intervals "
                        "are wider (they are reported either way; default %(default)s)")
    p.add_argument("--resolved", metavar="COMPARE_JSON",
                   help="replay the iteration counts of an earlier compare.json instead of probing")
    p.add_argument("--teacher-cache", default="auto",
                   help="auto (default): build the teacher target cache once and let every distillation run "
                        "read it; off: the online teacher in each run; or a cache folder from train.cache")
    p.add_argument("--charge", default="both", choices=("both", "amortised"),
                   help="with a cache and --match probe: amortised trains each run with the cache's build time "
                        "shared by all runs that read it; both (default) also trains one run per method and "
                        "seed with the build time charged in full, for a second gap-closed column")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for every run (e.g. data.batch_size=4 optim.lr=0.02)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods is empty; give e.g. --methods baseline,kd,lfd")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: give at least 1")
    if not 0 < args.probe_tolerance < 1 or not args.probe_seconds > 0:
        raise UserError(f"--probe-tolerance {args.probe_tolerance:g} must lie in (0, 1) and --probe-seconds "
                        f"{args.probe_seconds:g} be above 0")
    if bool(args.budget) == bool(args.budgets):
        raise UserError("give either --budget (one comparison) or --budgets (a sweep, e.g. --budgets 1m,2m,4m)")
    out = Path(args.out or f"runs/compare-{stem_of(args.config)}-{args.budget or 'sweep'}")
    from train.engine.run_lock import run_lock

    if args.budgets:
        return sweep_main(args, methods, out)

    # one comparison writes a folder; each run locks its own sub-folder too. SIGTERM outside a child's run
    # (cache build, teacher scoring) stops like Ctrl-C; inside one it is forwarded (run_child).
    with sigterm_as_interrupt(), run_lock(out, hint="--out"):
        report = compare(args.config, methods, args.budget, args.seeds, args.teacher, out, args.overrides,
                         args.val_every, args.match, args.resolved, args.teacher_cache, args.charge,
                         args.probe_tolerance, args.probe_seconds)
    t = report["teacher"]["miou"]
    print(f"\nteacher mIoU: {'-' if t is None else f'{100 * t:.2f} %'}; budget {report['budget']} per run "
          f"({report['match']})")
    print(table(report["methods"]))
    for w in spent_warnings(report["methods"]):
        print(f"warning: {w}")
    for f in report["failed"]:
        print(f"failed: {f['method']} seed {f['seed']} (exit code {f['exit_code']}): {' '.join(f['command'])}")
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 1 if report["failed"] else 0

