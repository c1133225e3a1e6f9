"""`python -m runtime.select --models S.onnx S.int8.cpu.onnx S.openvino.xml --data synthetic --latency-budget 30ms`:
the most accurate way to run these models on this machine within a latency budget.

Every model file is tried with every backend and precision that can run it here (`candidates`):

    .onnx                 ONNX Runtime (the file's own precision: FP32, FP16, INT8), and OpenVINO with
                          the f32 and bf16 precision hints (f16 on an OpenVINO GPU)
    .xml (OpenVINO IR)    OpenVINO f32 and bf16 (INT8 IRs from calib.quantize --target openvino)
    .engine / .plan       TensorRT (its build precision)
    .pt                   PyTorch

and, for a model with a dynamic input, at each `--sizes` H x W. Each candidate is timed on this
machine (one frame per call, after `--warmup` calls, as runtime.bench) in `--rounds` interleaved passes
of `--iters` calls, its p50 taken over all of them, and scored on `--data` (mIoU,
runtime.measure.evaluate, in the first pass). Its latency is a frame's: the model call plus the host's work
from its output kind to labels at the input size (`post_ms`, runtime.measure.time_postprocess: the arg-max
of full logits, the upsampling of native ones), so output kinds compare fairly. A candidate that cannot run here (backend not installed,
no GPU, bf16 not supported by this CPU) is listed with the reason and never chosen.

The choice (`choose`): among the candidates whose p50 is at most the budget (and, with `--max-drop D`,
whose mIoU is at most D points below the best FP32 run of the same model), the highest mIoU; mIoUs
within `--tie` points (default 0.05) of the highest count as ties, which go to the lower p50. A candidate is on the Pareto front when no other is both at least as fast and at
least as accurate, and strictly better in one. When nothing fits, the command says so, names the
fastest candidate and its latency, and exits with status 1 (a usage or input error exits with 2).

Writes select.json (the choice, the table, the settings and the environment), select.md and
select.png (mIoU against p50 latency, front joined, budget as a vertical line) into `--out`.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.cli import float_at_least, int_at_least
from runtime.errors import UserError, cli_main

COLUMNS = ["model", "backend", "precision", "output", "input", "status", "p50_ms", "p90_ms", "post_ms", "miou", "drop", "front", "fits"]
HEADERS = ["model", "backend", "precision", "output", "input", "status", "p50 ms", "p90 ms", "of which labels ms", "mIoU %", "drop", "front", "fits"]

# where to run -> options per backend (TensorRT engines always run on the GPU they were built for)
DEVICE_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"onnxruntime": {"providers": "cpu"}, "openvino": {"device": "CPU"}, "torch": {"device": "cpu"}},
    "gpu": {"onnxruntime": {"providers": "cuda,cpu"}, "openvino": {"device": "GPU"}, "torch": {"device": "cuda"}},
}
# OpenVINO precision hints worth trying per device
OPENVINO_PRECISIONS = {"cpu": ("f32", "bf16"), "gpu": ("f32", "f16")}
# file-name tags of reduced-precision artefacts (stripped to find the model they were made from)
PRECISION_TAGS = (".int8.cpu", ".int8.trt", ".int8.openvino", ".fp16")
# runtime.backends.model_format's artefact kind -> the precision its weights are stored in
FORMAT_PRECISION = {"pytorch": "fp32", "onnx": "fp32", "onnx fp16": "fp16", "onnx int8 (cpu)": "int8",
                    "onnx int8 (trt q/dq)": "int8 q/dq", "openvino": "fp32", "openvino int8": "int8"}
FLOAT_PRECISIONS = ("fp32", "f32")
# mIoU differences (points) that count as ties, which go to the faster candidate: two backends running
# the same weights in f32 differ by rounding, and bf16 often by less than one image's worth of pixels
TIE_POINTS = 0.05


@dataclass(frozen=True)
class Candidate:
    """One way to run one model file: backend, the options its constructor takes, and where it runs."""

    path: str
    backend: str
    device: str  # cpu | gpu (DEVICE_OPTIONS)
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def precision(self) -> str:
        """What the candidate computes in: the file's own precision, combined with OpenVINO's hint."""
        stored = file_precision(self.path)
        hint = self.options.get("precision_hint")
        if self.backend != "openvino" or hint in (None, "f32"):
            return stored
        return hint if stored == "fp32" else f"{stored}+{hint}"


def file_precision(path: str | Path) -> str:
    """fp32, fp16, int8 or int8 q/dq from the artefact's kind (runtime.backends.model_format: calib.quantize's
    naming); engines: their sidecar's build precision ("?" without one)."""
    from runtime.backends import model_format

    kind = model_format(path)
    if kind.startswith("tensorrt"):
        return kind.removeprefix("tensorrt").strip() or "?"
    return FORMAT_PRECISION.get(kind, "fp32")


def source_key(path: str | Path) -> str:
    """The model an artefact was made from: S.int8.cpu.onnx, S.openvino.xml, S.fp16.onnx -> S."""
    stem = re.sub(r"\.(onnx|xml|pt|pth|engine|plan)$", "", Path(path).name.lower())
    stem = re.sub(r"\.openvino$", "", stem)
    for tag in PRECISION_TAGS:
        stem = stem.removesuffix(tag)
    return re.sub(r"\.(fp32|fp16|int8|best|last)$", "", stem)


def candidates(paths: Sequence[str], devices: Sequence[str], backends: Sequence[str]) -> list[Candidate]:
    """Every (model, backend, precision hint, device) to try: the file's own backend (runtime.backends.SUFFIXES),
    and OpenVINO for an `.onnx` too. `backends`: those installed here; TensorRT engines run on the GPU."""
    from runtime.backends import SUFFIXES

    out: list[Candidate] = []
    for path in paths:
        native = SUFFIXES.get(Path(path).suffix.lower())
        if native == "tensorrt":
            out.append(Candidate(path, "tensorrt", "gpu"))
            continue
        names = [n for n in (native, "openvino" if native == "onnxruntime" else None) if n is not None and n in backends]
        for device in devices:
            for name in names:
                opts = DEVICE_OPTIONS[device][name]
                if name == "openvino":
                    out += [Candidate(path, name, device, {**opts, "precision_hint": p}) for p in OPENVINO_PRECISIONS[device]]
                else:
                    out.append(Candidate(path, name, device, dict(opts)))
    return out


@dataclass
class Selection:
    """The outcome of `choose`: indices into the rows (None when there is none) and one sentence."""

    choice: int | None
    fastest: int | None
    front: list[int]
    message: str


def _measured(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and row.get("p50_ms") is not None and row.get("miou") is not None


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the measured rows that no other measured row dominates (at least as fast and as
    accurate, strictly better in one), fastest first."""
    ok = [i for i, r in enumerate(rows) if _measured(r)]

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (a["p50_ms"] <= b["p50_ms"] and a["miou"] >= b["miou"]
                and (a["p50_ms"] < b["p50_ms"] or a["miou"] > b["miou"]))

    front = [i for i in ok if not any(dominates(rows[j], rows[i]) for j in ok if j != i)]
    return sorted(front, key=lambda i: rows[i]["p50_ms"])


def add_drops(rows: list[dict[str, Any]]) -> None:
    """Set each measured row's `drop`: points of mIoU below the best float (fp32/f32) run of the same
    source model (`source_key`), None when no float run of it was measured."""
    best: dict[str, float] = {}
    for r in rows:
        if _measured(r) and r["precision"] in FLOAT_PRECISIONS:
            key = source_key(r["path"])
            best[key] = max(best.get(key, float("-inf")), r["miou"])
    for r in rows:
        ref = best.get(source_key(r["path"])) if _measured(r) else None
        r["drop"] = None if ref is None else ref - r["miou"]


def describe(row: dict[str, Any]) -> str:
    return f"{row['model']} on {row['backend']} ({row['precision']}, {row['input']})"


def choose(rows: list[dict[str, Any]], budget_ms: float, max_drop: float | None = None,
           tolerance: float = TIE_POINTS) -> Selection:
    """Mark `front` and `fits` on every row and pick (see the module docstring): among the rows that fit,
    the fastest of those within `tolerance` mIoU points of the best. Rows need `status`, `p50_ms`,
    `miou` (%), `precision`, `path`, `model`, `backend`, `input`; `drop` is computed here."""
    add_drops(rows)
    front = pareto_front(rows)
    measured = [i for i, r in enumerate(rows) if _measured(r)]
    for i, r in enumerate(rows):
        r["front"] = i in front
        in_time = _measured(r) and r["p50_ms"] <= budget_ms
        r["fits"] = in_time and (max_drop is None or r["drop"] is None or r["drop"] <= max_drop)
    if not measured:
        return Selection(None, None, [], "no candidate could be measured here (see the status column)")
    fastest = min(measured, key=lambda i: (rows[i]["p50_ms"], -rows[i]["miou"]))
    fits = [i for i in measured if rows[i]["fits"]]
    if fits:
        best = max(rows[i]["miou"] for i in fits)
        close = [i for i in fits if rows[i]["miou"] >= best - tolerance]
        choice = min(close, key=lambda i: (rows[i]["p50_ms"], -rows[i]["miou"]))
        r = rows[choice]
        return Selection(choice, fastest, front, f"choice: {describe(r)}: mIoU {r['miou']:.2f} %, p50 {r['p50_ms']:.2f} ms "
                                                 f"within the {budget_ms:g} ms budget")
    f = rows[fastest]
    in_time = [i for i in measured if rows[i]["p50_ms"] <= budget_ms]
    if in_time:  # fast enough, but each loses too much
        return Selection(None, fastest, front, f"nothing fits: {len(in_time)} candidate(s) run within {budget_ms:g} ms "
                                               f"but each loses more than {max_drop:g} mIoU points against its "
                                               f"FP32 model; raise --max-drop or the budget")
    return Selection(None, fastest, front, f"nothing fits the {budget_ms:g} ms budget: the fastest option is "
                                           f"{describe(f)} at {f['p50_ms']:.2f} ms p50 (mIoU {f['miou']:.2f} %)")


def measure(cand: Candidate, sizes: Sequence[tuple[int, int]], data: str | None, split: str,
            max_images: int | None, warmup: int, iters: int, threads: int | None, score: bool = True
            ) -> list[dict[str, Any]]:
    """Rows for one candidate: one per input size (its own size when the model's input is static or
    `sizes` is empty), each with its per-call `ms` samples; mIoU only with `score` and `data`. A
    UserError (missing backend, no GPU, unreadable model) becomes the status."""
    from runtime.backends import load_backend
    from runtime.measure import evaluate, time_backend, time_postprocess
    from runtime.preprocess import dummy_batch

    p = Path(cand.path)
    base: dict[str, Any] = {"model": p.name, "path": str(p), "backend": cand.backend, "device": cand.device,
            "precision": cand.precision, "settings": dict(cand.options), "output": None, "input": None, "status": "ok",
            "p50_ms": None, "p90_ms": None, "miou": None}
    try:
        with load_backend(p, cand.backend, threads=threads, **cand.options) as b:
            hint = cand.options.get("precision_hint")
            resolved = getattr(b, "precision", None)
            if hint not in (None, "f32") and resolved is not None and resolved != hint:
                return [{**base, "status": f"skipped: OpenVINO runs {resolved} here, not {hint} (the device has no "
                                          f"{hint} support), which the f32 row already measures"}]
            base["output"] = b.output_text
            rows = []
            for size in (list(sizes) if b.static_size is None and sizes else [b.input_size]):
                row = {**base, "input": f"{size[0]}x{size[1]}"}
                x = dummy_batch(b.info, size)
                model_ms = time_backend(b, x, warmup, iters)
                # a frame's latency includes the host's work from this output kind to labels (module docstring)
                post = statistics.median(time_postprocess(b, x, size))
                row.update({"post_ms": post, "ms": [ms + post for ms in model_ms]})
                if data and score:
                    from runtime.datasets import DataSpec

                    res = evaluate(b, DataSpec.for_model(b.info, data).open(split), size, max_images)
                    row.update({"miou": 100 * res["mIoU"], "images": res["images"]})
                rows.append(row)
            return rows
    except UserError as e:
        return [{**base, "status": f"error: {e}"}]


def measure_rounds(cands: Sequence[Candidate], rounds: int, sizes: Sequence[tuple[int, int]], data: str | None,
                   split: str, max_images: int | None, warmup: int, iters: int, threads: int | None
                   ) -> list[dict[str, Any]]:
    """Time every candidate in `rounds` interleaved passes (candidate 1, 2, ..., n, then again), so
    that a slow spell of a shared machine falls on all candidates alike rather than on whichever ran
    then; score mIoU in the first pass. Each row's p50/p90 are of all its calls pooled;
    `round_p50_ms` lists each pass's p50, whose spread says how steady the machine was."""
    from runtime.report import latency_summary

    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        got: list[dict[str, Any]] = []
        for k, c in enumerate(cands, 1):
            print(f"[round {r + 1}/{rounds}, {k}/{len(cands)}] {Path(c.path).name} on {c.backend} ({c.precision}, "
                  f"{c.device}) ...", file=sys.stderr)
            got += measure(c, sizes, data, split, max_images, warmup, iters, threads, score=r == 0)
        if r == 0:
            rows = got
            for row in rows:
                row["rounds_ms"] = [row.pop("ms")] if "ms" in row else []
            continue
        for row, again in zip(rows, got):
            if row["rounds_ms"] and "ms" in again:
                row["rounds_ms"].append(again["ms"])
    for row in rows:
        per_round = row.pop("rounds_ms")
        if per_round:
            lat = latency_summary([ms for one in per_round for ms in one])
            row.update({"p50_ms": lat["p50"], "p90_ms": lat["p90"], "mean_ms": lat["mean"], "iters": lat["n"],
                        "round_p50_ms": [latency_summary(one)["p50"] for one in per_round]})
    return rows


def plot(rows: list[dict[str, Any]], sel: Selection, budget_ms: float, path: Path, scored: bool = True
         ) -> str | None:
    """mIoU (y) against p50 latency (x, log), hollow where it does not fit; the front joined, the budget a
    dashed line with its value written on it, the choice ringed. Returns a note instead of a file
    (runtime.report.latency_plot; `scored`: --data was given)."""
    from runtime.report import PlotPoint, latency_plot

    measured = [r for r in rows if _measured(r)]
    chosen = rows[sel.choice] if sel.choice is not None else None
    sized = len({r["input"] for r in measured}) > 1  # name the input only where it tells rows apart
    pts = [PlotPoint(r["p50_ms"], r["miou"], f"{r['model']} {r['input']}" if sized else r["model"], r["backend"],
                     r["precision"], hollow=not r["fits"], note="choice" if r is chosen else "") for r in measured]

    def draw(ax: Any) -> None:
        if sel.front:
            ax.step([rows[i]["p50_ms"] for i in sel.front], [rows[i]["miou"] for i in sel.front], where="post",
                    color="0.25", lw=1, alpha=0.6, zorder=1, label="Pareto front")
        ax.axvline(budget_ms, ls="--", color="tab:red", lw=1, zorder=1, label="latency budget")
        lo, hi = ax.get_xlim()
        left = math.log(budget_ms / lo) > 0.7 * math.log(hi / lo)  # near the right edge: write it on the left
        ax.text(budget_ms, 0.98, f" budget {budget_ms:g} ms ", transform=ax.get_xaxis_transform(), color="tab:red",
                fontsize=7, ha="right" if left else "left", va="top")
        if sel.choice is not None:
            c = rows[sel.choice]
            ax.scatter(c["p50_ms"], c["miou"], s=200, facecolors="none", edgecolors="black", lw=1.5, zorder=4,
                       label="choice")

    return latency_plot(path, pts, draw, size=(7, 4.5), scored=scored, hollow_label="does not fit",
                        include_ms=[budget_ms])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.select", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True,
                   help="model files to choose from: .onnx (FP32, FP16, INT8), .xml (OpenVINO IR), .engine, .pt")
    p.add_argument("--latency-budget", required=True, help="largest acceptable p50 per frame, e.g. 30ms or 0.03s")
    p.add_argument("--data", help="dataset to score mIoU on (name:root, or synthetic); without it nothing is chosen")
    p.add_argument("--split", default="val", help="dataset split for --data (default val)")
    p.add_argument("--max-images", type=int, help="score mIoU on the first N images only (default: the whole split)")
    p.add_argument("--max-drop", type=float_at_least(0), default=None,
                   help="also refuse candidates more than D mIoU points below the FP32 run of the same model")
    p.add_argument("--tie", type=float_at_least(0), default=TIE_POINTS,
                   help=f"mIoU points within which candidates count as equally accurate; the faster wins "
                        f"(default {TIE_POINTS})")
    p.add_argument("--device", nargs="+", choices=sorted(DEVICE_OPTIONS), default=["cpu"],
                   help="where to run: cpu (ONNX Runtime CPU, OpenVINO CPU, torch cpu) and/or gpu (ONNX Runtime "
                        "CUDA, OpenVINO GPU, torch cuda); TensorRT engines always run on the GPU (default cpu)")
    p.add_argument("--sizes", nargs="+", default=[], help="input sizes H x W to try for models with a dynamic input "
                                                          "(default: each model's own input size)")
    p.add_argument("--threads", type=int, help="CPU threads for inference (ONNX Runtime, OpenVINO, torch)")
    p.add_argument("--warmup", type=int_at_least(0), default=5, help="untimed calls before timing (default 5)")
    p.add_argument("--iters", type=int_at_least(1), default=30,
                   help="timed calls per candidate and round (default 30)")
    p.add_argument("--rounds", type=int_at_least(1), default=3,
                   help="interleaved timing passes over all candidates; p50 is of all calls pooled (default 3)")
    p.add_argument("--out", default="runs/select", help="folder for select.json, select.md, select.png")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from runtime.backends import backend_name_for, registry
    from runtime.cli import parse_ms, parse_size
    from runtime.io import atomic_write_text, check_writable
    from runtime.lazy import has_module
    from runtime.report import format_table, write_report

    args = build_parser().parse_args(argv)
    budget = parse_ms(args.latency_budget)
    sizes = [s for s in (parse_size(t, "--sizes") for t in args.sizes) if s is not None]
    out = Path(args.out)
    check_writable(out, "--out folder", folder=True)
    for m in args.models:
        backend_name_for(m)  # a suffix no backend takes is a usage error, not an empty row
    here = [n for n in registry() if n != "openvino" or has_module("openvino")]
    cands = candidates(args.models, args.device, here)
    rows = measure_rounds(cands, args.rounds, sizes, args.data, args.split, args.max_images, args.warmup, args.iters,
                          args.threads)
    sel = choose(rows, budget, args.max_drop, args.tie)
    table = [{**r, "front": "*" if r["front"] else "", "fits": "yes" if r["fits"] else ""} for r in rows]
    print(format_table(table, COLUMNS, headers=HEADERS))
    print(sel.message if args.data else "no choice: pass --data to score mIoU (only latency was measured)")
    settings = {k: getattr(args, k) for k in ("models", "latency_budget", "data", "split", "max_images", "max_drop",
                                              "tie", "device", "sizes", "threads", "warmup", "iters", "rounds")}
    report = {"settings": settings, "budget_ms": budget, "message": sel.message,
              "choice": None if sel.choice is None else rows[sel.choice],
              "fastest": None if sel.fastest is None else rows[sel.fastest], "columns": COLUMNS, "rows": rows}
    write_report(out / "select.json", report, threads=args.threads)
    atomic_write_text(out / "select.md", format_table(table, COLUMNS, markdown=True, headers=HEADERS)
                      + f"\n\n{sel.message}\n")
    note = plot(rows, sel, budget, out / "select.png", scored=bool(args.data))
    print(f"wrote {out / 'select.json'}, {out / 'select.md'}" + (f" ({note})" if note else f", {out / 'select.png'}"))
    return 0 if sel.choice is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
