"""Seconds per training iteration of each method, with the online teacher and from the teacher cache.

    .venv/bin/python scripts/bench_distill_step.py --config configs/demo.yaml --teacher runs/demo/teacher/best.pt \\
        --methods baseline,kd,lfd --steps 15 --warmup 5 --out runs/bench-step

One `train.distill --probe-only` subprocess per (method, teacher source), one at a time (run nothing else
meanwhile: on a small CPU a second job distorts every figure). Builds the cache first (`train.cache`,
timed). Writes step.json and step.md: median s/iter, its ratio to the baseline's, and the cache's build
time and size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.io import atomic_write_json, atomic_write_text  # noqa: E402
from runtime.report import format_table  # noqa: E402


def run(cmd: list[str]) -> None:
    rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--methods", default="baseline,kd,lfd")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default="runs/bench-step")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    cache_dir = out / "cache"
    t0 = time.perf_counter()
    run([py, "-m", "train.cache", "--teacher", args.teacher, "--config", args.config, *args.overrides,
         "method=lfd", "--out", str(cache_dir)])
    cache_wall = time.perf_counter() - t0
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    size = sum(f.stat().st_size for f in cache_dir.rglob("*.npy"))
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        sources = ["online"] if method == "baseline" else ["online", "cache"]
        for source in sources:
            path = out / f"{method}-{source}.json"
            cache = "off" if source == "online" else str(cache_dir)
            run([py, "-m", "train.distill", "--config", args.config, *args.overrides, f"method={method}",
                 f"teacher={args.teacher}", f"distill.teacher_cache={cache}", f"train.probe_steps={args.steps}",
                 f"train.probe_warmup={args.warmup}", "--probe-only", str(path)])
            rec = json.loads(path.read_text())
            rows.append({"method": method, "teacher": source if method != "baseline" else "-",
                         "s_per_iter": rec["s_per_iter"], "min": min(rec["step_seconds"]),
                         "max": max(rec["step_seconds"])})
    base = next(r["s_per_iter"] for r in rows if r["method"] == "baseline")
    for r in rows:
        r["x_baseline"] = r["s_per_iter"] / base
    report = {"rows": rows, "cache": {"build_seconds": manifest["build_seconds"], "wall_seconds": cache_wall,
                                      "bytes": size, "images": len(manifest["image_ids"]),
                                      "outputs": manifest["outputs"]},
              "steps": args.steps, "warmup": args.warmup, "config": args.config,
              "env": json.loads((out / f"{rows[0]['method']}-online.json").read_text())["env"]}
    atomic_write_json(out / "step.json", report)
    table = format_table(rows, ["method", "teacher", "s_per_iter", "min", "max", "x_baseline"], digits=3,
                         headers=["method", "teacher", "median s/iter", "min", "max", "x baseline"])
    text = (f"{table}\n\ncache: {len(manifest['image_ids'])} images, {size / 2**20:.1f} MiB, built in "
            f"{manifest['build_seconds']:.1f}s ({cache_wall:.1f}s with start-up)\n")
    atomic_write_text(out / "step.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
