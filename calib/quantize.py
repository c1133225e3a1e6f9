"""`python -m calib.quantize --onnx S.onnx --data synthetic --target cpu|trt|openvino [--fp16]`: reduced precision.

- `--target cpu` -> `S.int8.cpu.onnx`: ONNX Runtime QDQ (u8s8, per-channel weights), fast on CPUs.
- `--target trt` -> `S.int8.trt.onnx`: symmetric int8 Q/DQ as TensorRT requires (nvidia-modelopt when
  installed, else ONNX Runtime), checked by calib.qdq_check.
- `--target openvino` -> `S.int8.openvino.xml` + `.bin`: an OpenVINO IR quantized by NNCF
  (calib/openvino_int8.py); needs the `[openvino]` extra.
- `--fp16` -> `S.fp16.onnx`: float16 weights and compute, float32 inputs and outputs.

Calibration images are TRAINING images covering every class (calib/dataset.py, cached); the mIoU of the
FP32 and reduced-precision models is measured on the first `--val-images` of the val split. With
`--max-drop D` (D >= 0), the accuracy guard (calib/sensitivity.py) keeps the most sensitive nodes in
float until the drop is at most D points. Each output gets `<output>.calib.json`: images, method, target,
excluded nodes, FP32 and INT8 mIoU, drop, whether --max-drop was met (`max_drop`: target, reached, met),
timings and versions.

Exit status: 0 done; 2 a usage or input error (one sentence); 3 the guard could not
bring the drop within --max-drop: the model and its report (`max_drop.met` false) are written and a line
says the drop reached and what was kept in float; `--best-effort` accepts such a model and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calib.dataset import DEFAULT_CACHE_DIR, CalibrationSet, build_calibration_set, evaluation_set
from calib.onnx_io import cpu_session, data_info, input_size, load_onnx
from runtime.datasets import DataSpec, SegmentationDataset
from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_bytes, atomic_write_json, check_writable, sha256_file
from runtime.metadata import ONNX_SOURCE_KEY, DataInfo

TARGETS = ("cpu", "trt", "openvino")
EXIT_MAX_DROP_MISSED = 3  # the model is written, but its drop is above --max-drop (docs/reliability.md)


@dataclass
class QuantizeOptions:
    target: str | None = "cpu"  # cpu | trt | openvino | None (FP16 only)
    method: str | None = None  # minmax | entropy | percentile (None: minmax for cpu, entropy for trt; openvino: NNCF's)
    images: int = 200
    max_drop: float | None = None
    fp16: bool = False
    val_images: int = 50
    seed: int = 0
    cache_dir: str = str(DEFAULT_CACHE_DIR)
    allow_missing_classes: bool = False
    reduce_range: bool | None = None  # None: on x86 CPUs without VNNI
    quantizer: str = "auto"  # auto | modelopt | ort (trt target)
    threads: int | None = None
    probe_images: int = 4  # images for the sensitivity ranking
    skip_bad: bool = False  # leave out corrupt images or labels (counted in the report) instead of stopping


def output_path(src: Path, kind: str) -> Path:
    """S.onnx -> S.int8.cpu.onnx / S.int8.trt.onnx / S.fp16.onnx / S.int8.openvino.xml (an IR)."""
    suffix = ".xml" if kind == "int8.openvino" else ".onnx"
    return src.with_name(f"{src.name.removesuffix('.onnx')}.{kind}{suffix}")


def quantize(onnx_path: str | Path, data: str | None, opts: QuantizeOptions, out: str | Path | None = None,
             dataset_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write the requested models with their `.calib.json` reports; returns the reports.

    `data` is `name:root` (DataSpec.for_model: naming the model's own reader keeps its recorded synthetic
    generator, as runtime.eval does); `dataset_options`, when given, replace the reader options."""
    if opts.max_drop is not None and not opts.max_drop >= 0:  # NaN too
        raise UserError(f"--max-drop {opts.max_drop:g} must be 0 or more (mIoU points)")
    src = Path(onnx_path)
    model = load_onnx(src)
    cpu_session(src).close()  # ONNX Runtime must load it too; fails with the file named
    info = data_info(model, src)
    spec = DataSpec.for_model(info, data) if data is not None else None
    if spec is not None and dataset_options:
        spec = replace(spec, options=dict(dataset_options))
    if info.uint8_input:
        raise UserError(f"{src} takes uint8 frames (exported with --uint8-input); quantize the float-input export "
                        f"of the same checkpoint (python -m export.onnx without --uint8-input)")
    size = input_size(model, info)
    if opts.target is None and not opts.fp16:
        raise UserError("nothing to do: pass --target cpu|trt|openvino and/or --fp16")
    if opts.target is not None and opts.target not in TARGETS:
        raise UserError(f"--target {opts.target}: choose cpu, trt or openvino")
    if opts.target == "openvino":
        if opts.method is not None:
            raise UserError(f"--method {opts.method} applies to --target cpu and trt; NNCF chooses its own ranges "
                            "for --target openvino (leave --method out)")
        if out is not None and Path(out).suffix != ".xml":
            raise UserError(f"--out {out}: an OpenVINO IR is written as NAME.xml (+ NAME.bin)")
    if out is not None and opts.target is not None and opts.fp16:
        raise UserError("--out names one file; with both --target and --fp16 leave it out")
    if opts.target is not None and data is None:
        raise UserError("INT8 needs calibration images: pass --data name:root (or --data synthetic)")
    if opts.target is not None:
        check_writable(Path(out) if out else output_path(src, f"int8.{opts.target}"), "output model")
    if opts.fp16:
        check_writable(Path(out) if out else output_path(src, "fp16"), "output model")
    job = Job(src=src, model=model, info=info, size=size, opts=opts)
    if spec is not None:
        t0 = time.perf_counter()
        val_reader = spec.open("val", skip_bad=opts.skip_bad, skip_option="--skip-bad")
        images, labels = evaluation_set(val_reader, info, size, opts.val_images)
        job.skipped.extend(val_reader.bad)
        job.timings["load_val_s"] = time.perf_counter() - t0
        from calib.sensitivity import miou, predict

        t0 = time.perf_counter()
        pred = predict(src, images, opts.threads)
        job.reference = Reference(images, labels, pred, miou(pred, labels, info))
        job.timings["eval_fp32_s"] = time.perf_counter() - t0
    reports = []
    with tempfile.TemporaryDirectory(prefix="lfd-calib-") as tmp_dir:
        if opts.target is not None and spec is not None:  # data is checked above
            dst = Path(out) if out else output_path(src, f"int8.{opts.target}")
            train = spec.open("train", skip_bad=opts.skip_bad, skip_option="--skip-bad")
            int8 = _int8_openvino if opts.target == "openvino" else _int8
            reports.append(int8(job.fork(), spec, train, dst, Path(tmp_dir)))
        if opts.fp16:
            dst = Path(out) if out else output_path(src, "fp16")
            reports.append(_fp16(job.fork(), data, dst))
    return reports


@dataclass
class Reference:
    """The FP32 model on the held-out images: what each quantized model's mIoU and agreement compare with."""

    images: np.ndarray  # float32 N x 3 x H x W, pre-processed at the model's input size
    labels: np.ndarray  # N x H x W
    pred: np.ndarray  # the FP32 model's N x H x W labels
    miou: float


@dataclass
class Job:
    """One source model and what every output made from it shares: its data block, input size, options,
    the FP32 reference (None without --data), the timings so far and the corrupt samples left out."""

    src: Path
    model: onnx.ModelProto
    info: DataInfo
    size: tuple[int, int]
    opts: QuantizeOptions
    reference: Reference | None = None
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def fork(self) -> Job:
        """A copy whose timings and skipped list one output extends without touching the others'."""
        return replace(self, timings=dict(self.timings), skipped=list(self.skipped))


def _int8(job: Job, data: DataSpec, train: SegmentationDataset, dst: Path, tmp: Path) -> dict[str, Any]:
    from calib import int8
    from calib.qdq_check import check_qdq
    from calib.sensitivity import guard

    opts, info, ref = job.opts, job.info, job.reference
    method = opts.method or ("minmax" if opts.target == "cpu" else "entropy")
    calib = _calibration_set(job, data, train)
    t0 = time.perf_counter()
    prepared = int8.prepare(job.src, tmp / "prepared.onnx")
    prepared_model = onnx.load(str(prepared))
    use_modelopt = opts.target == "trt" and (opts.quantizer == "modelopt" or
                                              (opts.quantizer == "auto" and int8.has_modelopt()))
    ranges = tmp / "ranges.json"

    def run(exclude: Sequence[str], path: Path) -> Path:
        if opts.target == "cpu":
            return int8.quantize_cpu(prepared, path, calib.images, method, exclude, ranges, opts.reduce_range)
        if use_modelopt:
            return int8.quantize_trt_modelopt(prepared, path, calib.images, method, exclude)
        return int8.quantize_trt_ort(prepared, path, calib.images, method, exclude, ranges)

    if ref is None:
        raise UserError("INT8 needs the val split of --data to measure the mIoU drop")
    probe = calib.images[:opts.probe_images]
    chosen = guard(run, prepared_model, tmp, ref.images, ref.labels, probe, info, ref.miou, opts.max_drop,
                   threads=opts.threads)
    job.timings["quantize_and_guard_s"] = time.perf_counter() - t0
    q = onnx.load(str(chosen["path"]))
    _copy_metadata(job.model, q)
    violations = check_qdq(q) if opts.target == "trt" else []
    if violations:
        raise UserError(f"the TensorRT Q/DQ model breaks TensorRT's rules ({len(violations)}): "
                        + "; ".join(violations[:5]) + ("; ..." if len(violations) > 5 else ""))
    atomic_write_bytes(dst, q.SerializeToString())
    return _int8_report(job, dst, calib, data, train, target=opts.target, method=method,
                        quantizer="modelopt" if use_modelopt else "onnxruntime", excluded_nodes=chosen["excluded"],
                        guard_rounds=chosen["rounds"], sensitivity=chosen["ranking"], qdq_violations=violations)


def _int8_openvino(job: Job, data: DataSpec, train: SegmentationDataset, dst: Path, tmp: Path) -> dict[str, Any]:
    """NNCF PTQ of the ONNX model into an INT8 IR (calib/openvino_int8.py), guarded by NNCF's accuracy
    control when --max-drop is given; the report's mIoU is the written IR's, run by the runtime backend."""
    from calib import openvino_int8

    opts, ref = job.opts, job.reference
    if ref is None:
        raise UserError("INT8 needs the val split of --data to measure the mIoU drop")
    calib = _calibration_set(job, data, train)
    t0 = time.perf_counter()
    record = openvino_int8.quantize_ir(job.src, dst, calib.images, ref.images, ref.labels, job.info, opts.max_drop,
                                       extra={ONNX_SOURCE_KEY: {"onnx": job.src.name, "quantizer": "nncf"}})
    job.timings["quantize_and_guard_s"] = time.perf_counter() - t0
    report = _int8_report(job, dst, calib, data, train, target="openvino", method="nncf", quantizer="nncf",
                          excluded_nodes=record.get("reverted_ops", []), nncf=record)
    return report


def _calibration_set(job: Job, data: DataSpec, train: SegmentationDataset) -> CalibrationSet:
    """The class-covering calibration images of every INT8 target (calib/dataset.py, cached)."""
    opts = job.opts
    t0 = time.perf_counter()
    key = f"{data.text} {json.dumps(dict(data.options), sort_keys=True, default=str)}" if data.options else data.text
    calib = build_calibration_set(train, key, job.info, job.size, opts.images, opts.seed,
                                  opts.cache_dir, opts.allow_missing_classes)
    job.timings["calibration_set_s"] = time.perf_counter() - t0
    return calib


def _int8_report(job: Job, dst: Path, calib: CalibrationSet, data: DataSpec, train: SegmentationDataset,
                 **fields: Any) -> dict[str, Any]:
    """Score the written INT8 model `dst`, write `<dst>.calib.json` (accuracy, calibration set, max drop,
    skipped samples and the target's own `fields`) and return it."""
    opts, ref = job.opts, job.reference
    assert ref is not None  # the INT8 paths check it first
    report = _report(job, dst, "int8", _predict_final(dst, ref.images, opts.threads))
    report.update({"calibration": {"images": calib.names, "count": len(calib.names), "cache": str(calib.path),
                                   "dataset": data.text, "split": "train", "seed": opts.seed,
                                   "classes_missing": calib.manifest.get("classes_missing", [])},
                   "max_drop": _max_drop(opts.max_drop, report["accuracy"]["drop"]),
                   "skipped_samples": list(job.skipped) + list(train.bad), **fields})
    _say_skipped(report["skipped_samples"])
    atomic_write_json(f"{dst}.calib.json", report)
    return report


def _max_drop(target: float | None, reached: float) -> dict[str, Any] | None:
    """The report's `max_drop`: None without --max-drop, else the target, the written model's drop and
    whether it is within the target."""
    return None if target is None else {"target": target, "reached": reached, "met": reached <= target}


def missed_line(report: dict[str, Any]) -> str | None:
    """One line saying that an INT8 report's --max-drop was not met: the drop reached and what the guard
    kept in float (NNCF's accuracy control, for openvino); None when it was met or not asked for."""
    md = report.get("max_drop")
    if not md or md["met"]:
        return None
    kept = len(report["excluded_nodes"])
    if report["target"] == "openvino":
        tried = (f"NNCF's accuracy control reverted {kept} of {report['nncf']['quantized_ops_plain']} quantized "
                 f"operation(s) to float")
    else:
        rounds = report["guard_rounds"]
        tried = (f"best of {len(rounds)} guard round(s): {kept} node(s) kept in float, up to "
                 f"{max(len(r['excluded']) for r in rounds)} tried")
    return (f"--max-drop {md['target']:g} not met: {Path(report['model']).name} loses {md['reached']:.2f} mIoU "
            f"points ({tried})")


def _fp16(job: Job, data: str | None, dst: Path) -> dict[str, Any]:
    from calib.fp16 import convert_fp16

    t0 = time.perf_counter()
    half = convert_fp16(job.model)
    _copy_metadata(job.model, half)
    atomic_write_bytes(dst, half.SerializeToString())
    job.timings["convert_s"] = time.perf_counter() - t0
    ref = job.reference
    report = _report(job, dst, "fp16", _predict_final(dst, ref.images, job.opts.threads) if ref is not None else None)
    report.update({"target": "fp16", "method": None, "calibration": None, "excluded_nodes": [], "dataset": data,
                   "skipped_samples": list(job.skipped)})
    atomic_write_json(f"{dst}.calib.json", report)
    return report


def _say_skipped(skipped: list[str]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} corrupt sample(s) (--skip-bad), listed in the report: {skipped[0]}",
              file=sys.stderr)


def _predict_final(path: Path, images: np.ndarray, threads: int | None) -> np.ndarray:
    from calib.sensitivity import predict

    return predict(path, images, threads)


def _report(job: Job, dst: Path, precision: str, pred: np.ndarray | None) -> dict[str, Any]:
    from calib.sensitivity import miou

    acc: dict[str, Any] = {"val_images": 0}
    ref = job.reference
    if ref is not None and pred is not None:
        m = miou(pred, ref.labels, job.info)
        acc = {"val_images": int(len(ref.images)), "fp32_miou": ref.miou, f"{precision}_miou": m,
               "drop": 100.0 * (ref.miou - m), "agreement_with_fp32": float((pred == ref.pred).mean())}
    return {"model": str(dst), "precision": precision, "source": {"onnx": str(job.src), "sha256": sha256_file(job.src)},
            "accuracy": acc, "timings": {k: round(v, 3) for k, v in job.timings.items()}, "versions": _versions()}


def _copy_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    keys = {p.key for p in dst.metadata_props}
    for p in src.metadata_props:
        if p.key not in keys:
            dst.metadata_props.add(key=p.key, value=p.value)


def _versions() -> dict[str, str]:
    """Versions of the libraries that made and scored the model (optional ones where installed, read from
    package metadata so that nothing heavy is imported)."""
    from importlib import metadata

    import onnxruntime

    v = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    for dist in ("nvidia-modelopt", "openvino", "nncf"):
        try:
            v[dist.removeprefix("nvidia-")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calib.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="FP32 ONNX model from python -m export.onnx")
    p.add_argument("--data", default=None, help="dataset as name:root, or synthetic (calibration + val mIoU)")
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="cpu: ONNX Runtime QDQ for CPUs; trt: symmetric Q/DQ for TensorRT; openvino: an INT8 "
                        "OpenVINO IR quantized by NNCF (pip install -e '.[openvino]')")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default=None,
                   help="calibration method (default: minmax for cpu, entropy for trt)")
    p.add_argument("--images", type=int, default=200, help="calibration images from the train split (default 200)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="largest acceptable mIoU drop in points (0 or more); keeps sensitive nodes in float until "
                        "met (openvino: NNCF's accuracy control); when it cannot be met, the model is written, a "
                        f"line says so and the exit status is {EXIT_MAX_DROP_MISSED}")
    p.add_argument("--best-effort", action="store_true",
                   help="accept a model that misses --max-drop (the line is still printed; exit 0)")
    p.add_argument("--fp16", action="store_true", help="also (or only) write an FP16 model with float32 I/O")
    p.add_argument("--val-images", type=int, default=50, help="val images for the mIoU comparison (default 50)")
    p.add_argument("--out", default=None, help="output .onnx (default: S.int8.<target>.onnx or S.fp16.onnx; "
                                               "openvino: S.int8.openvino.xml)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration image choice (default 0)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="calibration set cache folder")
    p.add_argument("--allow-missing-classes", action="store_true",
                   help="calibrate even when some of the model's classes appear in no training image")
    p.add_argument("--reduce-range", choices=("auto", "yes", "no"), default="auto",
                   help="cpu target: 7-bit weights (auto: on x86 CPUs without VNNI)")
    p.add_argument("--quantizer", choices=("auto", "modelopt", "ort"), default="auto",
                   help="trt target: nvidia-modelopt or ONNX Runtime (auto: modelopt when installed)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for the evaluation")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out corrupt images or labels (counted, listed in the report) instead of stopping")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1 or args.val_images < 1:
        raise UserError("--images and --val-images must be at least 1")
    opts = QuantizeOptions(target=args.target, method=args.method, images=args.images, max_drop=args.max_drop,
                           fp16=args.fp16, val_images=args.val_images, seed=args.seed, cache_dir=args.cache_dir,
                           allow_missing_classes=args.allow_missing_classes,
                           reduce_range={"auto": None, "yes": True, "no": False}[args.reduce_range],
                           quantizer=args.quantizer, threads=args.threads, skip_bad=args.skip_bad)
    reports = quantize(args.onnx, args.data, opts, args.out)
    print(f"{'model':<40} {'precision':<9} {'fp32 mIoU':>9} {'mIoU':>7} {'drop':>6} {'agree':>7} excluded")
    for r in reports:
        a = r["accuracy"]
        prec = r["precision"] + (f"/{r['target']}" if r["precision"] == "int8" else "")
        if a["val_images"]:
            mi = a.get("int8_miou", a.get("fp16_miou"))
            nums = f"{100 * a['fp32_miou']:>9.2f} {100 * mi:>7.2f} {a['drop']:>6.2f} {100 * a['agreement_with_fp32']:>6.2f}%"
        else:
            nums = f"{'-':>9} {'-':>7} {'-':>6} {'-':>7}"
        print(f"{Path(r['model']).name:<40} {prec:<9} {nums} {len(r['excluded_nodes'])}")
    for r in reports:
        print(f"report: {r['model']}.calib.json")
        if r.get("target") == "trt":
            print(f"build it: python -m export.trt --onnx {r['model']} --precision int8")
        else:
            print(f"run it:   python -m runtime.infer --model {r['model']} --source video.mp4 --show")
    print(f"compare:  python -m runtime.bench --models {args.onnx} " + " ".join(r["model"] for r in reports))
    missed = [line for line in map(missed_line, reports) if line]
    for line in missed:
        print(f"{line}; kept (--best-effort)" if args.best_effort else
              f"{line}; the model and its report are written: raise --max-drop, or pass --best-effort to accept "
              "it", file=sys.stderr)
    return EXIT_MAX_DROP_MISSED if missed and not args.best_effort else 0


if __name__ == "__main__":
    raise SystemExit(main())

