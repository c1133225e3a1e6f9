"""Live inference against its own backend: for each model, `runtime.bench` FPS and `runtime.infer` FPS on a
video (no output, then `--save`), with the stage p50s and CPU ms per frame, one command at a time.

    python scripts/bench_live.py --video runs/demo/synthetic.mp4 \
        --models runs/demo/export/student.int8.cpu.onnx runs/demo/export/student-512.onnx \
        [--threads 1 2] [--out runs/bench-live]

Writes OUT/live.json and OUT/live.md. Time nothing else while it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.io import atomic_write_json, atomic_write_text  # noqa: E402
from runtime.report import format_table  # noqa: E402


def _run(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def bench_fps(model: str, threads: int | None, tmp: Path) -> float:
    out = tmp / "bench"
    _run(["runtime.bench", "--models", model, "--warmup", "10", "--iters", "100", "--out", str(out),
          *(["--threads", str(threads)] if threads else [])])
    return float(json.loads((out / "bench.json").read_text())["rows"][0]["fps"])


def infer_run(model: str, video: str, threads: int | None, save: bool, tmp: Path) -> dict[str, Any]:
    js = tmp / "infer.json"
    _run(["runtime.infer", "--model", model, "--source", video, "--json", str(js), "--measure-backend", "0",
          *(["--save", str(tmp / "o.mp4")] if save else []), *(["--threads", str(threads)] if threads else [])])
    return json.loads(js.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--threads", nargs="*", type=int, default=[],
                   help="inference threads to try (default: each command's own default)")
    p.add_argument("--out", default="runs/bench-live")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for model in args.models:
            for threads in (args.threads or [None]):
                alone = bench_fps(model, threads, tmp)
                for save in (False, True):
                    r = infer_run(model, args.video, threads, save, tmp)
                    st = r["stages"]
                    rows.append({"model": Path(model).name, "threads": r.get("threads") if threads is None else threads,
                                 "output": "--save" if save else "none", "bench_fps": alone, "infer_fps": r["fps"],
                                 "ratio": 100 * r["fps"] / alone, "pre_ms": st["preprocess"]["p50"],
                                 "infer_ms": st["infer"]["p50"], "draw_ms": st["draw"]["p50"],
                                 "write_ms": st.get("write", {}).get("p50"), "e2e_p50_ms": r["end_to_end"]["p50"],
                                 "cpu_ms": r.get("cpu_ms_per_frame"), "ceiling_fps": r.get("cpu_ceiling_fps")})
                    print(rows[-1], flush=True)
    cols = ["model", "threads", "output", "bench_fps", "infer_fps", "ratio", "pre_ms", "infer_ms", "draw_ms",
            "write_ms", "e2e_p50_ms", "cpu_ms", "ceiling_fps"]
    heads = ["model", "threads", "output", "bench FPS", "infer FPS", "% of bench", "pre p50", "infer p50",
             "draw p50", "write p50", "e2e p50 ms", "CPU ms/frame", "CPU ceiling FPS"]
    out = Path(args.out)
    atomic_write_json(out / "live.json", {"rows": rows, "video": args.video})
    atomic_write_text(out / "live.md", format_table(rows, cols, markdown=True, headers=heads, digits=1) + "\n")
    print(format_table(rows, cols, headers=heads, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
