"""Where distillation pays: every method at several budgets (`train.compare --budgets 1m,2m,4m,8m`).

Each budget is one comparison (train/compare/run.py) in `<out>/budget-<b>/`, all reading one teacher cache
and one cost measurement (the probes or FLOP counts of the first budget are copied to the others: a
step costs the same whatever the budget). The sweep then tabulates the final validation mIoU per method
and budget (mean ± sample std over seeds) and, against the baseline (the student alone) at the same
budget,

    Δ = m̄_method − m̄_baseline,     s_p = √((s²_method + s²_baseline) / 2),

and calls the method better ("beats") where Δ > 2 · s_p: more than twice the pooled seed standard
deviation (with one seed there is no s_p and no verdict). A crossing is where Δ changes sign between two
budgets; its compute is interpolated linearly between them,

    c* = c₁ + (c₂ − c₁) · Δ₁ / (Δ₁ − Δ₂).

Outputs in `<out>`: sweep.json, sweep.md (the table, verdicts and crossings) and sweep.png (mIoU against
compute, one line per method, the seed spread shaded, the teacher as a line, crossings marked). Compute
is the budget in seconds (`--match probe`/`wallclock`) or in counted TFLOP (`--match flops`: N baseline
steps times the baseline's step FLOPs).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime.errors import UserError
from runtime.io import atomic_write_json, atomic_write_text
from runtime.report import format_table
from train.engine.budget import parse_budget

BASELINE = "baseline"


def parse_budgets(text: str) -> list[str]:
    """'1m,2m,4m' -> ['1m', '2m', '4m']: each one a valid budget, all of one kind, in increasing order."""
    items = [b.strip() for b in text.split(",") if b.strip()]
    if len(items) < 2:
        raise UserError(f"--budgets {text!r}: give at least two budgets, e.g. --budgets 1m,2m,4m,8m")
    parsed = [parse_budget(b) for b in items]
    if len({p.is_time for p in parsed}) > 1:
        raise UserError(f"--budgets {text!r} mixes wall-clock and iteration budgets; give one kind")
    values = [float(p.seconds if p.is_time else p.iterations or 0) for p in parsed]
    if any(b >= a for a, b in zip(values[1:], values)):
        raise UserError(f"--budgets {text!r} must increase strictly (1m,2m,4m)")
    return items


def budget_folder(out: Path, budget: str) -> Path:
    return out / f"budget-{budget}"


def share_costs(first: Path, other: Path) -> None:
    """Copy the cost measurement of the first budget's comparison (probes.json, flops.json) to another's
    folder, so that every budget resolves its counts from the same costs."""
    other.mkdir(parents=True, exist_ok=True)
    for name in ("probes.json", "flops.json"):
        if (first / name).is_file() and not (other / name).is_file():
            shutil.copyfile(first / name, other / name)


def compute_of(report: dict[str, Any]) -> float:
    """The compute axis value of one comparison: budget seconds, or TFLOP with --match flops."""
    b = parse_budget(report["budget"].split()[0])  # "60s" or "200 iterations"
    if report["match"] == "flops":
        ref = next(iter(report["flops"].values()))["reference"]
        return float(b.iterations or 0) * report["flops"][ref]["step_flops"] / 1e12
    return float(b.seconds if b.is_time else b.iterations or 0)


def pooled_std(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return math.sqrt((a * a + b * b) / 2)


def sweep_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (budget, method) from each budget's compare.json: compute, mIoU mean/std, per-seed
    values, Δ to the baseline, the pooled std and the verdict (module docstring)."""
    rows = []
    for budget, rep in reports.items():
        methods = {r["method"]: r for r in rep["methods"]}
        base = methods.get(BASELINE)
        for m, r in methods.items():
            delta = None if base is None or m == BASELINE else r["miou_mean"] - base["miou_mean"]
            sp = None if base is None or len(r["miou_per_seed"]) < 2 else pooled_std(r["miou_std"], base["miou_std"])
            rows.append({"budget": budget, "compute": compute_of(rep), "method": m, "miou_mean": r["miou_mean"],
                         "miou_std": r["miou_std"], "miou_per_seed": r["miou_per_seed"],
                         "iterations": r["iterations"], "delta": delta, "pooled_std": sp,
                         "beats": None if delta is None or sp is None else bool(delta > 2 * sp),
                         "teacher_miou": rep["teacher"]["miou"]})
    return rows


def crossings(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, where Δ to the baseline changes sign (compute by linear interpolation), and whether the
    method rises above the baseline there (`up`) or falls below it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["compute"], r["delta"]) for r in rows if r["method"] == m and r["delta"] is not None)
        found = []
        for (c1, d1), (c2, d2) in zip(pts, pts[1:]):
            if d1 * d2 < 0:
                found.append({"compute": c1 + (c2 - c1) * d1 / (d1 - d2), "up": d2 > 0})
        if m != BASELINE and pts:
            out[m] = found
    return out


def _pct(v: float | None, s: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" + ("" if s is None else f" ± {100 * s:.2f}")


def sweep_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """mIoU by budget (rows) and method (columns); a method's cell adds Δ to the baseline and ✓ where it
    beats it by more than 2 s_p."""
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = []
    for b in budgets:
        line: dict[str, Any] = {"budget": b}
        for r in rows:
            if r["budget"] != b:
                continue
            line["compute"] = f"{r['compute']:.4g}"
            text = _pct(r["miou_mean"], r["miou_std"])
            if r["delta"] is not None:
                text += f" ({100 * r['delta']:+.2f}" + (" ✓" if r["beats"] else "") + ")"
            line[r["method"]] = text
        cells.append(line)
    return format_table(cells, ["budget", "compute", *methods], markdown=markdown)


def sweep_markdown(rows: Sequence[dict[str, Any]], unit: str, seeds: int) -> str:
    cross = crossings(rows)
    teacher = next((r["teacher_miou"] for r in rows if r.get("teacher_miou") is not None), None)
    lines = ["# Where distillation pays: mIoU by budget\n",
             f"Final validation mIoU (%), mean ± std over {seeds} seed(s); in brackets Δ to the student alone "
             f"(baseline) at the same budget, ✓ where Δ > 2 · pooled seed std. Compute: {unit}. Teacher "
             f"{_pct(teacher)} %.\n", sweep_table(rows, markdown=True), ""]
    for m, found in cross.items():
        lines.append(f"- {m}: " + (", then ".join(f"{'rises above' if c['up'] else 'falls below'} the baseline at "
                                                  f"{c['compute']:.4g} ({unit})" for c in found)
                                   if found else "never crosses the baseline in this range"))
    return "\n".join(lines) + "\n"


def plot_sweep(rows: Sequence[dict[str, Any]], path: Path, unit: str, title: str) -> Path:
    """sweep.png: mIoU (%) against compute, one line per method with the seed spread (min-max) shaded,
    the teacher as a dashed line, crossings of the baseline marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    base = {r["compute"]: r["miou_mean"] for r in rows if r["method"] == BASELINE}
    cross = crossings(rows)
    for i, m in enumerate(methods):
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["compute"])
        x = [r["compute"] for r in mine]
        y = [100 * r["miou_mean"] for r in mine]
        ax.plot(x, y, marker="o", color=colours(i % 10), label=m, lw=2 if m == BASELINE else 1.5)
        lo = [100 * min(r["miou_per_seed"]) for r in mine]
        hi = [100 * max(r["miou_per_seed"]) for r in mine]
        ax.fill_between(x, lo, hi, color=colours(i % 10), alpha=0.15)
        for c in cross.get(m, []):
            ax.plot([c["compute"]], [100 * _interp(base, c["compute"])], marker="^" if c["up"] else "v", ms=10,
                    color=colours(i % 10), markeredgecolor="black")
    teacher = next((r["teacher_miou"] for r in rows if r.get("teacher_miou") is not None), None)
    if teacher is not None:
        ax.axhline(100 * teacher, color="black", ls="--", lw=1, label="teacher")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["compute"] for r in rows})
    ax.set_xticks(ticks, [f"{c:.3g}" for c in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"compute per run ({unit})")
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _interp(points: dict[float, float], c: float) -> float:
    xs = sorted(points)
    for a, b in zip(xs, xs[1:]):
        if a <= c <= b:
            return points[a] + (points[b] - points[a]) * (c - a) / (b - a)
    return points[min(xs, key=lambda v: abs(v - c))]


def sweep(budgets: Sequence[str], out: Path, run_one: Callable[[str, Path], dict[str, Any]], seeds: int,
          title: str) -> dict[str, Any]:
    """Run (or resume) one comparison per budget with `run_one(budget, folder)`, then write sweep.json,
    sweep.md and sweep.png in `out`."""
    reports: dict[str, dict[str, Any]] = {}
    for i, b in enumerate(budgets):
        folder = budget_folder(out, b)
        if i > 0:
            share_costs(budget_folder(out, budgets[0]), folder)
        print(f"[sweep] budget {b} ({i + 1} of {len(budgets)}) in {folder}", flush=True)
        reports[b] = run_one(b, folder)
    rows = sweep_rows(reports)
    unit = "TFLOP, counted" if next(iter(reports.values()))["match"] == "flops" else (
        "seconds" if parse_budget(budgets[0]).is_time else "iterations")
    result = {"budgets": list(budgets), "unit": unit, "rows": rows, "crossings": crossings(rows),
              "failed": [f for r in reports.values() for f in r["failed"]]}
    atomic_write_json(out / "sweep.json", result)
    atomic_write_text(out / "sweep.md", sweep_markdown(rows, unit, seeds))
    plot_sweep(rows, out / "sweep.png", unit, title)
    return result
