"""How the gain from unlabeled footage changes with its amount: one train.compare folder per footage size.

    python scripts/footage_curve.py --point 0=runs/f0 --point 500=runs/f500 --point 2000=runs/f2000 \
        --method kd --out runs/footage-curve

Each `--point FRAMES=FOLDER` names a comparison (its compare.json) run with that many unlabeled frames
(`data.unlabeled=synthetic:FRAMES`; 0: none). For the student alone and each `--method`, the final mIoU
of every seed is read from compare.json's runs; per footage size, the mean ± std over seeds, the gain
over the student alone (mean difference of the seed-paired runs, ± the std of the differences) and the
iterations each run got are written to footage-curve.json / .md and plotted in footage-curve.png (mIoU
against frames, with the student alone and the teacher as lines).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.errors import UserError, cli_main  # noqa: E402
from runtime.io import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from runtime.report import format_table  # noqa: E402

BASELINE = "baseline"


def seed_mious(report: dict[str, Any], method: str) -> dict[int, float]:
    """seed -> final mIoU (%) of `method`'s runs in a compare.json."""
    return {int(r["seed"]): 100.0 * float(r["final_miou"]) for r in report.get("runs", {}).get(method, [])
            if r.get("final_miou") is not None}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def curve_rows(points: dict[int, dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """One row per (footage size, method): mean ± std mIoU and the seed-paired gain over the student alone."""
    rows = []
    for frames in sorted(points):
        report = points[frames]
        alone = seed_mious(report, BASELINE)
        for method in [BASELINE, *methods]:
            mine = seed_mious(report, method)
            if not mine:
                continue
            mean, std = mean_std(list(mine.values()))
            diffs = [mine[s] - alone[s] for s in mine if s in alone]
            gain, gain_std = mean_std(diffs) if method != BASELINE else (None, None)
            iters = [r.get("iterations") for r in report["runs"][method]]
            rows.append({"frames": frames, "method": method, "miou": mean, "std": std, "gain": gain,
                         "gain_std": gain_std, "seeds": len(mine), "iterations": iters})
    return rows


def plot(rows: list[dict[str, Any]], teacher: float | None, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    base = [r for r in rows if r["method"] == BASELINE]
    if base:
        m = statistics.fmean(r["miou"] for r in base)
        s = statistics.fmean(r["std"] for r in base)
        ax.axhline(m, color="0.3", lw=1.2, label=f"student alone (labels only) {m:.2f} %")
        ax.axhspan(m - s, m + s, color="0.85", zorder=0)
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != BASELINE):
        pts = [r for r in rows if r["method"] == method]
        ax.errorbar([r["frames"] for r in pts], [r["miou"] for r in pts], yerr=[r["std"] for r in pts],
                    marker="o", capsize=3, label=f"{method} (+ footage)")
    if teacher is not None:
        ax.axhline(teacher, color="tab:red", ls="--", lw=1, label=f"teacher {teacher:.2f} %")
    ax.set_xlabel("unlabeled frames in the transfer set")
    ax.set_ylabel("val mIoU (%), mean ± std over seeds")
    lo = min(r["miou"] - r["std"] for r in rows)
    hi = max([r["miou"] + r["std"] for r in rows] + ([teacher] if teacher is not None else []))
    pad = max(1.0, 0.1 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(sorted({r["frames"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("equal counted FLOPs (footage cache build shared)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120), "plot")
    plt.close(fig)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--point", action="append", required=True, metavar="FRAMES=FOLDER",
                   help="a train.compare folder run with FRAMES unlabeled frames (repeat)")
    p.add_argument("--method", action="append", default=None, help="distillation method(s) to plot (default kd)")
    p.add_argument("--out", required=True, help="folder for footage-curve.json, .md and .png")
    args = p.parse_args(argv)
    points: dict[int, dict[str, Any]] = {}
    teacher = None
    for item in args.point:
        frames, sep, folder = item.partition("=")
        if not sep or not frames.strip().isdigit():
            raise UserError(f"--point {item}: give FRAMES=FOLDER, e.g. 500=runs/f500")
        path = Path(folder) / "compare.json"
        if not path.is_file():
            raise UserError(f"{path} does not exist; run train.compare with --out {folder} first")
        points[int(frames)] = json.loads(path.read_text())
        teacher = teacher or (points[int(frames)].get("teacher") or {}).get("miou")
    rows = curve_rows(points, args.method or ["kd"])
    if not rows:
        raise UserError("no finished runs in the given folders")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = 100.0 * teacher if teacher is not None else None
    columns = ["frames", "method", "miou", "std", "gain", "gain_std", "seeds", "iterations"]
    headers = ["frames", "method", "mIoU %", "± std", "gain (pts)", "± std", "seeds", "iterations per seed"]
    atomic_write_json(out / "footage-curve.json", {"teacher_miou": t, "rows": rows})
    atomic_write_text(out / "footage-curve.md", format_table(rows, columns, markdown=True, digits=2, headers=headers)
                      + "\n")
    plot(rows, t, out / "footage-curve.png")
    print(format_table(rows, columns, digits=2, headers=headers))
    print(json.dumps({"curve": str(out / "footage-curve.png")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
