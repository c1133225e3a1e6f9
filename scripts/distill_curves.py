"""Why a distillation method does (not) beat the student alone: curves from the runs' own log.jsonl.

    python scripts/distill_curves.py --runs runs/demo/distill [--out runs/demo/distill/curves]

For every run folder under --runs (those with a log.jsonl), reads the validation records (iteration,
mIoU) and the training records (every loss term as weighted, and `raw_*` before weighting or
normalisation where the method reports them) and writes:

- curves.md / curves.json: val mIoU of each run at the same iterations (the last validation at or before
  each), so methods are compared at equal iterations as well as at equal compute (their last row);
- the mean of each loss term over the first, middle and last third of each run (how big the
  distillation terms are beside the task loss, and whether they fall);
- curves.png: val mIoU against iterations, and each term against iterations (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.io import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from runtime.report import format_table  # noqa: E402

SKIP = {"kind", "iteration", "elapsed", "lr", "loss", "s_per_iter"}


def read_log(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train, val = [], []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        (val if rec.get("kind") == "val" else train).append(rec)
    return train, val


def miou_at(val: list[dict[str, Any]], iteration: int) -> float | None:
    """The last validation mIoU at or before `iteration`."""
    before = [v for v in val if v["iteration"] <= iteration]
    return 100 * before[-1]["mIoU"] if before else None


def thirds(train: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """term -> mean over the first, middle and last third of the logged steps."""
    terms = sorted({k for r in train for k in r if k not in SKIP})
    n = len(train)
    parts = [train[: n // 3], train[n // 3: 2 * n // 3], train[2 * n // 3:]]
    out: dict[str, list[float | None]] = {}
    for t in terms:
        means = []
        for part in parts:
            values = [float(r[t]) for r in part if t in r]
            means.append(sum(values) / len(values) if values else None)
        out[t] = means
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="a train.compare output folder (one sub-folder per run)")
    p.add_argument("--out", help="where to write curves.{md,json,png} (default: RUNS/curves)")
    args = p.parse_args(argv)
    runs_dir = Path(args.runs)
    out = Path(args.out) if args.out else runs_dir / "curves"
    runs = {d.name: read_log(d / "log.jsonl") for d in sorted(runs_dir.iterdir()) if (d / "log.jsonl").is_file()}
    if not runs:
        print(f"error: no run folder with a log.jsonl under {runs_dir}", file=sys.stderr)
        return 2
    checkpoints = sorted({v["iteration"] for _, val in runs.values() for v in val})
    rows = [{"iteration": it, **{name: miou_at(val, it) for name, (_, val) in runs.items()}} for it in checkpoints]
    names = list(runs)
    md = ["# Val mIoU (%) at equal iterations", "",
          format_table(rows, ["iteration", *names], markdown=True, digits=2), "",
          "# Mean loss terms: first / middle / last third of each run", ""]
    term_rows = []
    report: dict[str, Any] = {"miou_at_iterations": rows, "terms": {}}
    for name, (train, _) in runs.items():
        th = thirds(train)
        report["terms"][name] = th
        for t, (a, b, c) in th.items():
            term_rows.append({"run": name, "term": t, "first": a, "middle": b, "last": c})
    md.append(format_table(term_rows, ["run", "term", "first", "middle", "last"], markdown=True, digits=4))
    atomic_write_text(out / "curves.md", "\n".join(md) + "\n")
    atomic_write_json(out / "curves.json", report)
    print("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out / 'curves.md'}, {out / 'curves.json'} (no plot: pip install matplotlib)")
        return 0
    terms = sorted({t for th in report["terms"].values() for t in th})
    fig, axes = plt.subplots(1, 1 + len(terms), figsize=(4 * (1 + len(terms)), 3.2))
    axes = list(axes) if len(terms) else [axes]
    for name, (train, val) in runs.items():
        axes[0].plot([v["iteration"] for v in val], [100 * v["mIoU"] for v in val], marker=".", label=name)
        for ax, t in zip(axes[1:], terms):
            pts = [(r["iteration"], r[t]) for r in train if t in r]
            if pts:
                ax.plot(*zip(*pts), label=name, linewidth=0.8)
    axes[0].set(title="val mIoU %", xlabel="iteration")
    axes[0].legend(fontsize=7)
    for ax, t in zip(axes[1:], terms):
        ax.set(title=t, xlabel="iteration")
    fig.tight_layout()
    atomic_write(out / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    print(f"wrote {out / 'curves.md'}, {out / 'curves.json'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
