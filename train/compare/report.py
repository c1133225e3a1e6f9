"""The report of a budget-matched comparison (train.compare): one row per method from its runs'
results.json (mIoU mean ± std over seeds, the share of the teacher-student gap closed, iterations, cost
ratio, seconds spent, cache cost, peak memory), the console and Markdown table, the spent-seconds check,
and compare.png (validation mIoU against the budget clock)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.report import format_table
from train.engine.budget import parse_budget


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for a single value; None for none)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def gap_closed(miou: float | None, baseline: float | None, teacher: float | None) -> float | None:
    """`(miou - baseline) / (teacher - baseline)`: 0 = no better than the student alone, 1 = the teacher's
    mIoU. None when a value is missing or the teacher is not better than the baseline."""
    if miou is None or baseline is None or teacher is None or teacher - baseline <= 0:
        return None
    return (miou - baseline) / (teacher - baseline)


SPENT_TOLERANCE = 0.05  # training seconds actually spent: within ±5 % of the baseline's, else a warning


def summarize(runs: dict[str, list[dict[str, Any]]], teacher_miou: float | None,
              baseline: str = "baseline", charged: dict[str, list[dict[str, Any]]] | None = None,
              probes: dict[str, float] | None = None, cache_seconds: dict[str, float] | None = None,
              costs: dict[str, dict[str, Any]] | None = None, runs_sharing: int = 1,
              spent_tolerance: float = SPENT_TOLERANCE, step_flops: dict[str, int] | None = None,
              cache_flops: dict[str, float] | None = None, check: bool = True) -> list[dict[str, Any]]:
    """One row per method from its runs' results.json dicts (engine fields final_miou, best_miou,
    iterations, s_per_iter, peak_mem_mb, peak_mem_kind); mIoU as fractions. `charged`: the runs of the
    same methods with the cache build charged in full; `probes`: probed s/iter; `cache_seconds`: the
    cache build time each method's runs read from, shared by `runs_sharing` runs; `costs`: the interleaved
    cost records (ratio to the reference with its 95 % interval). Each row also gets `spent_s`, the
    training seconds a run actually spent (budget clock, mean over seeds) plus its share of the cache
    build, and `spent_ratio` to the baseline's (`spent_ok`: within ±`spent_tolerance`). With `step_flops`
    (--match flops: counted FLOPs per step, and `cache_flops`, the build's FLOPs per method reading it) each
    row gets `flops_spent` = iterations · step FLOPs + cache FLOPs / runs_sharing and `flops_ratio` to the
    baseline's, and the ±`spent_tolerance` check is made on FLOPs, what the comparison matched. `check`
    False (an iteration budget, which matches no compute): no check, `spent_ok` None."""
    rows = []
    for method, results in runs.items():
        mious = [r["final_miou"] for r in results if r.get("final_miou") is not None]
        mean, std = mean_std(mious)
        rows.append({
            "method": method,
            "seeds": [r.get("seed") for r in results],
            "miou_per_seed": mious,
            "miou_mean": mean,
            "miou_std": std,
            "best_miou_mean": mean_std([r["best_miou"] for r in results if r.get("best_miou") is not None])[0],
            "iterations": mean_std([r["iterations"] for r in results])[0],
            "s_per_iter": mean_std([r["s_per_iter"] for r in results])[0],
            "elapsed_s": mean_std([r["elapsed_s"] for r in results])[0],
            "peak_mem_mb": max(r["peak_mem_mb"] for r in results),
            "peak_mem_kind": results[0].get("peak_mem_kind"),
            "probe_s_per_iter": (probes or {}).get(method),
            "cache_s": (cache_seconds or {}).get(method),
            **{k: (costs or {}).get(method, {}).get(k) for k in ("ratio", "ratio_low", "ratio_high")},
        })
        rows[-1]["spent_s"] = rows[-1]["elapsed_s"] + (rows[-1]["cache_s"] or 0.0) / max(1, runs_sharing)
        f = (step_flops or {}).get(method)
        rows[-1]["step_flops"] = f
        rows[-1]["flops_spent"] = (None if f is None else rows[-1]["iterations"] * f
                                   + float((cache_flops or {}).get(method) or 0.0) / max(1, runs_sharing))
        ch = (charged or {}).get(method) or []
        ch_mious = [r["final_miou"] for r in ch if r.get("final_miou") is not None]
        rows[-1]["charged_miou_mean"], rows[-1]["charged_miou_std"] = mean_std(ch_mious)
        rows[-1]["charged_iterations"] = mean_std([r["iterations"] for r in ch])[0]
    base = next((r["miou_mean"] for r in rows if r["method"] == baseline), None)
    ref = next((r["spent_s"] for r in rows if r["method"] == baseline), None)
    if ref is None and rows:
        ref = statistics.median(r["spent_s"] for r in rows)
    ref_flops = next((r["flops_spent"] for r in rows if r["method"] == baseline), None) if step_flops else None
    for r in rows:
        r["spent_ratio"] = r["spent_s"] / ref if ref else None
        r["flops_ratio"] = r["flops_spent"] / ref_flops if ref_flops and r["flops_spent"] is not None else None
        matched = r["flops_ratio"] if step_flops else r["spent_ratio"]
        r["spent_ok"] = (matched is not None and abs(matched - 1) <= spent_tolerance) if check else None
        r["gap_closed"] = gap_closed(r["miou_mean"], base, teacher_miou)
        # a method that reads no cache pays nothing for it: charged = amortised
        r["gap_closed_charged"] = (gap_closed(r["charged_miou_mean"], base, teacher_miou)
                                   if r["charged_miou_mean"] is not None else
                                   r["gap_closed"] if not r.get("cache_s") else None)
    return rows


def markdown_report(rows: list[dict[str, Any]], teacher_miou: float | None, budget: str, seeds: int,
                    match: str = "probe") -> str:
    """compare.md: a header line and the table (mIoU in %)."""
    teacher = "-" if teacher_miou is None else f"{100 * teacher_miou:.2f}"
    how = ("resolved to iterations per method by a probe of its s/iter" if match == "probe"
           else "the counted FLOPs of that many baseline steps, resolved to iterations per method" if match == "flops"
           else "run live as a wall-clock budget" if parse_budget(budget).is_time else "in iterations")
    flops = (" FLOPs: the counted FLOPs each run spent (training steps plus its share of the cache build), "
             "relative to the baseline's: what --match flops matches." if match == "flops" else "")
    cost = ("" if match == "flops" else "Cost: each method's step time relative to the baseline's, measured in "
            "interleaved rounds in one process (95 % interval). ")
    head = (f"# Budget-matched comparison\n\nBudget {parse_budget(budget)} per run ({how}), {seeds} seed(s), "
            f"teacher mIoU {teacher} %. mIoU: final weights, mean ± std over seeds; gap closed = "
            f"(mIoU − baseline) / (teacher − baseline), with the teacher cache's build time amortised over the "
            f"runs that read it, and charged in full to each run. "
            f"{cost}Spent: the "
            f"training seconds each run actually spent (budget clock, plus its share of the cache build) "
            f"relative to the baseline's.{flops}\n\n")
    warnings = "".join(f"> **warning**: {w}\n" for w in spent_warnings(rows))
    return head + table(rows, markdown=True) + "\n" + ("\n" + warnings if warnings else "")


def spent_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per method whose matched compute (training seconds spent; counted FLOPs with --match
    flops) lies outside ±SPENT_TOLERANCE of the baseline's."""
    flops = [f"{r['method']} spent {100 * (r['flops_ratio'] - 1):+.1f} % of the baseline's counted FLOPs, outside "
             f"±{100 * SPENT_TOLERANCE:g} %: the budget buys too few of its steps to match (raise --budget)"
             for r in rows if r.get("flops_ratio") is not None and r.get("spent_ok") is False]
    if any(r.get("flops_ratio") is not None for r in rows):
        return flops
    return [f"{r['method']} spent {100 * (r['spent_ratio'] - 1):+.1f} % of the baseline's training seconds "
            f"({r['spent_s']:.1f} s), outside ±{100 * SPENT_TOLERANCE:g} %: its compute was not matched (the "
            f"machine's load changed between the probe and the runs, or the probe interval was wide); rerun on "
            f"an idle machine or with --match flops"
            for r in rows if r.get("spent_ratio") is not None and r.get("spent_ok") is False]


def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cells = [{
        "method": r["method"],
        "mIoU": _pct(r["miou_mean"], r["miou_std"]),
        "gap": "-" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.1f} %",
        "gap_ch": "-" if r.get("gap_closed_charged") is None else f"{100 * r['gap_closed_charged']:.1f} %",
        "it": f"{r['iterations']:.0f}" + (f" / {r['charged_iterations']:.0f}" if r.get("charged_iterations") else ""),
        "probe": "-" if r.get("probe_s_per_iter") is None else f"{r['probe_s_per_iter']:.3f}",
        "cost": "-" if r.get("ratio") is None else
                f"{r['ratio']:.3f} ({r['ratio_low']:.3f}-{r['ratio_high']:.3f})",
        "spent": "-" if r.get("spent_ratio") is None else
                 f"{r['spent_s']:.1f} ({100 * (r['spent_ratio'] - 1):+.1f} %)"
                 + (" !" if r.get("spent_ok") is False and r.get("flops_ratio") is None else ""),
        "s/it": f"{r['s_per_iter']:.3f}",
        "flops": "-" if r.get("flops_ratio") is None else
                 f"{r['flops_spent'] / 1e12:.3g} ({100 * (r['flops_ratio'] - 1):+.1f} %)" + (" !" if r.get("spent_ok") is False else ""),
        "cache": "-" if not r.get("cache_s") else f"{r['cache_s']:.1f}",
        "mem": f"{r['peak_mem_mb']:.0f}",
    } for r in rows]
    mem = "peak GPU MB" if rows and rows[0].get("peak_mem_kind") == "cuda_max_allocated" else "peak RSS MB"
    keys = ["method", "mIoU", "gap", "gap_ch", "it", "probe", "cost", "s/it", "spent", "cache", "mem"]
    headers = ["method", "mIoU (%)", "gap closed", "gap (cache charged)", "iterations (/ charged)", "probe s/iter",
               "cost vs baseline (95 %)", "train s/iter", "spent s (vs baseline)", "cache build s", mem]
    if any(r.get("flops_ratio") is not None for r in rows):  # --match flops: FLOP cost instead of probed time
        keys[5:7] = ["flops"]
        headers[5:7] = ["TFLOP spent (vs baseline)"]
        for c, r in zip(cells, rows):
            c["flops"] = c["flops"] + f", {r['step_flops'] / 1e9:.1f} GFLOP/step"
    return format_table(cells, keys, markdown=markdown, headers=headers)


def read_val_curve(log_path: str | Path, x: str = "elapsed") -> list[tuple[float, float]]:
    """(x, mIoU) of every validation line of a run's log.jsonl; x is the line's `elapsed` (budget-clock
    seconds) or `iteration`."""
    p = Path(log_path)
    if not p.is_file():
        return []
    points = []
    for line in p.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("kind") == "val" and rec.get("mIoU") is not None:
                points.append((float(rec[x]), float(rec["mIoU"])))
    return points


def plot_curves(curves: dict[str, list[list[tuple[float, float]]]], teacher_miou: float | None,
                path: str | Path, title: str, xlabel: str = "training time (s, budget clock)") -> Path:
    """compare.png: validation mIoU (%) against the budget clock (or `xlabel`'s quantity), one colour per
    method, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = plt.get_cmap("tab10")
    for i, (method, runs) in enumerate(curves.items()):
        for j, pts in enumerate(runs):
            if pts:
                x, y = zip(*pts)
                ax.plot(x, [100 * v for v in y], marker="o", ms=3, color=colours(i % 10),
                        alpha=1.0 if j == 0 else 0.6, label=method if j == 0 else None)
    if teacher_miou is not None:
        ax.axhline(100 * teacher_miou, color="black", ls="--", lw=1, label="teacher")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p
