"""Speed (and accuracy) of several model files in one table, like Ultralytics' benchmark.

    python -m runtime.bench --models s.pt s.onnx s.int8.cpu.onnx s.int8.engine --data synthetic --out runs/bench

For every model: load it (a model that cannot be loaded gets status "error: <sentence>" in its row and
the others still run), run `--warmup` calls, then time `--iters` calls of the backend on a fixed random
batch of `--batch` x 3 x H x W, and with `--data` score mIoU (runtime.eval). Writes bench.json (rows +
environment), bench.md (Markdown table) and bench.png (p50 latency against mIoU; needs matplotlib and
--data) into `--out`.

Columns: model, format, status, size MB (file size; an OpenVINO IR's .xml + .bin), mIoU %, p50/p90/p99 ms per batch, FPS =
batch * 1000 / mean ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from runtime.backends import backend_name_for, load_backend, model_format
from runtime.cli import add_backend_options, backend_options, parse_size
from runtime.errors import UserError, cli_main
from runtime.measure import evaluate, time_backend, time_postprocess
from runtime.preprocess import dummy_batch
from runtime.report import format_table, latency_summary

COLUMNS = ["model", "format", "output", "status", "size_mb", "miou", "p50_ms", "p90_ms", "p99_ms", "fps", "post_ms"]
HEADERS = ["model", "format", "output", "status", "size MB", "mIoU %", "p50 ms", "p90 ms", "p99 ms", "FPS",
           "+ labels ms"]


def model_size_mb(path: Path) -> float | None:
    """The model file's size in MB; an OpenVINO IR counts its `.bin` weights too. None when absent."""
    files = [path] + ([path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [])
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6 if path.is_file() else None


def bench_model(path: str, size: tuple[int, int] | None = None, batch: int = 1, warmup: int = 10,
                iters: int = 100, data: str | None = None, split: str = "val", max_images: int | None = None,
                backend: str | None = None, **opts: Any) -> dict[str, Any]:
    """One table row. A UserError (missing file or dependency, unreadable model, wrong shape) becomes
    status "error: ..."; anything else is a bug and propagates."""
    p = Path(path)
    row: dict[str, Any] = {"model": p.name, "path": str(p), "format": model_format(p), "status": "ok",
                           "size_mb": model_size_mb(p), "miou": None}
    try:
        row["backend"] = backend_name_for(p, backend)
        with load_backend(p, backend, **opts) as b:
            in_size = b.run_size(size)
            row.update({"input": f"{in_size[0]}x{in_size[1]}", "batch": batch, "output": b.output_text,
                        "providers": getattr(b, "providers", None)})
            ms = time_backend(b, dummy_batch(b.info, in_size, batch), warmup, iters)
            lat = latency_summary(ms, batch)
            row.update({"p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"], "mean_ms": lat["mean"],
                        "fps": lat["fps"], "iters": lat["n"]})
            # the host's work from this output kind to labels at the input size, beside the model's time
            post = time_postprocess(b, dummy_batch(b.info, in_size, batch), in_size)
            row["post_ms"] = statistics.median(post)
            if data:
                from runtime.datasets import DataSpec

                res = evaluate(b, DataSpec.for_model(b.info, data).open(split), size, max_images)
                row.update({"miou": 100 * res["mIoU"], "pixel_acc": 100 * res["pixel_acc"], "images": res["images"]})
    except UserError as e:
        row["status"] = f"error: {e}"
    return row


def plot(rows: list[dict[str, Any]], path: Path, scored: bool = True) -> str | None:
    """Scatter p50 latency (x, log) against mIoU (y), one numbered dot per model (colour: backend, marker:
    the precision its file stores, runtime.select.file_precision); returns a note instead of a file when
    matplotlib is missing or no row has both values (`scored`: --data was given)."""
    from runtime.report import PlotPoint, latency_plot
    from runtime.select import file_precision

    pts = [PlotPoint(r["p50_ms"], r["miou"], r["model"], r.get("backend", "?"), file_precision(r["path"]))
           for r in rows if r.get("miou") is not None and r.get("p50_ms") is not None]
    return latency_plot(path, pts, scored=scored)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="model files: .pt, .onnx, .engine (any mix)")
    p.add_argument("--size", help="input H x W for dynamic models (default: each model's own input size)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1; static models need their own)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    p.add_argument("--iters", type=int, default=100, help="timed calls (default 100)")
    p.add_argument("--data", help="also score mIoU on this dataset (name:root or synthetic)")
    p.add_argument("--split", default="val", help="dataset split for --data (default val)")
    p.add_argument("--max-images", type=int, help="score mIoU on the first N images only")
    add_backend_options(p)
    p.add_argument("--out", default="runs/bench", help="folder for bench.json, bench.md, bench.png (default runs/bench)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from runtime.io import atomic_write_text, check_writable
    from runtime.report import write_report

    args = build_parser().parse_args(argv)
    for name, v, low in (("--batch", args.batch, 1), ("--iters", args.iters, 1), ("--warmup", args.warmup, 0)):
        if v < low:
            raise UserError(f"{name} {v} must be at least {low}")
    size = parse_size(args.size)
    out = Path(args.out)
    check_writable(out, "--out folder", folder=True)
    rows = []
    for m in args.models:
        print(f"benchmarking {m} ...", file=sys.stderr)
        rows.append(bench_model(m, size, args.batch, args.warmup, args.iters, args.data, args.split,
                                args.max_images, args.backend, **backend_options(args)))
    print(format_table(rows, COLUMNS, headers=HEADERS))
    settings = {k: getattr(args, k) for k in ("size", "batch", "warmup", "iters", "data", "split", "max_images",
                                              "backend", "threads", "providers", "device", "ov_hint",
                                              "ov_precision")}
    write_report(out / "bench.json", {"settings": settings, "columns": COLUMNS, "rows": rows}, threads=args.threads)
    atomic_write_text(out / "bench.md", format_table(rows, COLUMNS, markdown=True, headers=HEADERS) + "\n")
    note = plot(rows, out / "bench.png", scored=bool(args.data))
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}" + (f" ({note})" if note else f", {out / 'bench.png'}"))
    failed = [r["model"] for r in rows if str(r.get("status", "ok")).startswith("error")]
    if failed:
        print(f"error: {len(failed)} of {len(rows)} models failed ({', '.join(map(str, failed))}); see the status "
              f"column", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
