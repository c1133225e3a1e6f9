"""Benchmark on an NVIDIA Jetson: latency, FPS, power, energy per frame and temperature, with the board's
JetPack/L4T release, TensorRT version, power mode (nvpmodel) and clock state (jetson_clocks) recorded.

    python -m runtime.jetson_bench --models s.fp16.engine s.int8.engine --duration 20 --interval-ms 100

For each model: warm up, then call it back to back for `--duration` seconds while `tegrastats` samples the
power rails every `--interval-ms` (runtime.tegrastats). Energy per frame (mJ) = mean power (W) * 1000 /
FPS, with power from the module's input rail (VDD_IN or POM_5V_IN) or the sum of its rails (AGX Orin on
JetPack 5, AGX Xavier). It is the whole module's energy, idle share included: fix the power mode and run
`sudo jetson_clocks` first for repeatable figures (both are recorded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from runtime.backends import load_backend, model_format, registry
from runtime.errors import UserError, cli_main
from runtime.machine import device_tree_model, jetpack_version, l4t_release, tensorrt_version, tool_output
from runtime.measure import time_backend, time_postprocess
from runtime.preprocess import dummy_batch
from runtime.report import format_table, latency_summary
from runtime.tegrastats import TegrastatsMonitor, summarize

COLUMNS = ["model", "format", "output", "status", "p50_ms", "p99_ms", "fps", "post_ms", "power_w", "energy_mj", "temp_c_max"]
HEADERS = ["model", "format", "output", "status", "p50 ms", "p99 ms", "FPS", "+ labels ms", "power W", "mJ/frame", "max temp C"]


def jetson_info() -> dict[str, Any]:
    """Board model, L4T release, JetPack and TensorRT versions (runtime.machine; None where unknown), and
    the settings a run depends on: nvpmodel mode and jetson_clocks state."""
    info: dict[str, Any] = {"board": device_tree_model(), "l4t": l4t_release(), "jetpack": jetpack_version(),
                            "tensorrt": tensorrt_version(), "nvpmodel": tool_output(["nvpmodel", "-q"])}
    clocks = tool_output(["jetson_clocks", "--show"])
    info["jetson_clocks"] = clocks if clocks else "unknown (jetson_clocks --show needs root: run with sudo)"
    return info


def bench_engine(path: str, duration_s: float, warmup: int, monitor: TegrastatsMonitor | None,
                 batch: int = 1, backend: str | None = None) -> dict[str, Any]:
    p = Path(path)
    row: dict[str, Any] = {"model": p.name, "path": str(p), "format": model_format(p), "status": "ok"}
    try:
        with load_backend(p, backend) as b:
            row["output"] = b.output_text  # native outputs leave the final upsampling to the host
            x = dummy_batch(b.info, b.input_size, batch)
            time_backend(b, x, warmup=warmup, iters=1)
            t0 = time.monotonic()
            ms = time_backend(b, x, warmup=0, iters=None, duration_s=duration_s)
            t1 = time.monotonic()
            # the Jetson's CPU work from this output kind to labels (full logits cost it the most)
            row["post_ms"] = statistics.median(time_postprocess(b, x, b.input_size))
    except UserError as e:
        row["status"] = f"error: {e}"
        return row
    lat = latency_summary(ms, batch)
    row.update({"p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"], "mean_ms": lat["mean"],
                "fps": lat["fps"], "iters": lat["n"], "batch": batch})
    if monitor is not None:
        time.sleep(0.05)  # let the sample that covers t1 arrive
        power = summarize(monitor.samples, t0, t1)
        row.update(power)
        row["power_w"] = power["power_w_mean"]
        w = power["power_w_mean"]
        row["energy_mj"] = w * 1000.0 / lat["fps"] if isinstance(w, float) and lat["fps"] > 0 else None
    return row


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.jetson_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="TensorRT engines (or any model file)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of timed inference per model (default 20)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    p.add_argument("--interval-ms", type=int, default=100, help="tegrastats sampling interval (default 100)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--backend", choices=sorted(registry()), help="force a backend (default: from each suffix)")
    p.add_argument("--no-power", action="store_true", help="do not run tegrastats (latency and FPS only)")
    p.add_argument("--out", default="runs/jetson_bench", help="folder for jetson_bench.json and .md")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from runtime.io import atomic_write_text
    from runtime.report import write_report

    args = build_parser().parse_args(argv)
    if args.duration <= 0 or args.interval_ms < 1 or args.batch < 1:
        raise UserError("--duration, --interval-ms and --batch must be positive")
    board = jetson_info()
    print(f"board {board['board']}, {board['l4t']}, JetPack {board['jetpack']}, TensorRT {board['tensorrt']}, "
          f"power mode: {(board['nvpmodel'] or 'unknown').splitlines()[0]}", file=sys.stderr)
    monitor = None if args.no_power else TegrastatsMonitor(args.interval_ms).start()
    rows = []
    try:
        for m in args.models:
            print(f"benchmarking {m} for {args.duration:g} s ...", file=sys.stderr)
            rows.append(bench_engine(m, args.duration, args.warmup, monitor, args.batch, args.backend))
    finally:
        if monitor is not None:
            monitor.stop()
    print(format_table(rows, COLUMNS, headers=HEADERS))
    out = Path(args.out)
    settings = {k: getattr(args, k) for k in ("duration", "warmup", "interval_ms", "batch", "backend", "no_power")}
    write_report(out / "jetson_bench.json", {"jetson": board, "settings": settings, "columns": COLUMNS, "rows": rows})
    atomic_write_text(out / "jetson_bench.md", format_table(rows, COLUMNS, markdown=True, headers=HEADERS) + "\n")
    print(f"wrote {out / 'jetson_bench.json'}, {out / 'jetson_bench.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
