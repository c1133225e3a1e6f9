"""Build a teacher target cache (train/teachers/targets.py) once, for every distillation run of a teacher:

    python -m train.cache --teacher runs/demo/teacher/best.pt --config configs/demo.yaml [key=value ...]

runs the frozen teacher over the training split and stores, in float16, what the configured method reads
from it (logits and the named features of its pairs), with a manifest. Rerun after an interruption to
continue; a cache for another teacher, dataset, split or pre-processing is refused. Every existing file is
checked against the manifest first (header and length: channels, size, dtype) and rebuilt when it does
not match; `--verify` only checks, and exits 2 when a file does not match. `--check N` then
measures, on N augmented training crops, how the cached logits differ from the online teacher's.
`--mode single|multiscale|exact` picks what is stored (train/teachers/cache_format.py; default
`distill.cache_mode`); `--mode all --check N` builds each mode for this teacher and prints one table
(agreement without and with colour jitter, mean KL, size on disk, build seconds).
Use it with `distill.teacher_cache=PATH` (or let `distill.teacher_cache=auto` build it on first use) and
the same `distill.cache_mode`. With a transfer set (`data.unlabeled=...`), the teacher's targets for its
frames are built too, in a cache of their own (`distill.footage_cache`, auto: under distill.cache_dir).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_json
from train.config import load_config
from train.losses import parse_method, teacher_reads
from train.teachers.cache_build import build_cache
from train.teachers.cache_format import (
    LOGITS,
    MODES,
    auto_path,
    cache_key,
    check_cache,
    disk_bytes,
    file_count,
    read_manifest,
    verify_files,
)
from train.teachers.source import check_teacher, teacher_sha256
from train.teachers.targets import measure_agreement


def default_outputs(method: str, reads: list[str]) -> list[str]:
    """What to store when --outputs is not given: what `method` reads (logits and decoder for baseline)."""
    return reads or [LOGITS, "decoder"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.cache",
        description="Run the frozen teacher once over the training split and store its logits and the "
                    "features the distillation method reads (float16, one .npy per image and output, with a "
                    "manifest naming teacher sha256, dataset, split, image ids and pre-processing). Prints "
                    "the size first; resumable (rerun to continue); a missing output is added to an existing "
                    "cache. Training reads it with distill.teacher_cache=PATH (or auto).",
        epilog="examples:\n"
               "  python -m train.cache --teacher runs/demo/teacher/best.pt --config configs/demo.yaml\n"
               "  python -m train.cache --teacher T.pt --config configs/demo.yaml method=fkd --check 32\n"
               "  python -m train.cache --teacher T.pt --config configs/cityscapes-r18.yaml --outputs logits\n"
               "  python -m train.cache --teacher T.pt --config configs/demo.yaml --mode multiscale --check 32\n"
               "  python -m train.cache --teacher T.pt --config configs/demo.yaml --mode exact budget=2000\n"
               "  python -m train.cache --teacher T.pt --config configs/demo.yaml --mode all --check 32 "
               "--outputs logits",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt) from python -m train.teacher")
    p.add_argument("--config", help="recipe YAML: its data section (dataset, split, val_size, mean/std) and "
                                    "distill.method decide what is stored")
    p.add_argument("--out", help="cache folder (default: the folder distill.teacher_cache=auto uses, "
                                 "<distill.cache_dir>/<teacher and data digest>)")
    p.add_argument("--outputs", help="comma-separated outputs to store: logits and/or feature names such as "
                                     "decoder,stage3 (default: what distill.method reads; logits,decoder "
                                     "for baseline)")
    p.add_argument("--max-gb", type=float, default=20.0, help="refuse to build a cache larger than this "
                                                              "(GiB, default %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="teacher batch size while building (default %(default)s)")
    p.add_argument("--device", default="cpu", help="device of the teacher while building: cpu, cuda, cuda:N "
                                                   "(default %(default)s)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="after building, compare the cached logits with the online teacher's on N "
                        "augmented training crops (argmax agreement, mean KL); writes agreement.json")
    p.add_argument("--mode", choices=[*MODES, "all"],
                   help="what to store (default: distill.cache_mode): single (each image at scale 1, warped per "
                        "sample), multiscale (each image at distill.cache_scales and mirrored), exact (the teacher "
                        "on the crops the seeded sampler draws); all: build each and print one table (with --check)")
    p.add_argument("--samples", type=int, default=0, metavar="N",
                   help="exact mode: store at least the first N samples of the seeded order (default: what "
                        "train.budget in iterations or train.iterations reads, or distill.cache_samples)")
    p.add_argument("--verify", action="store_true",
                   help="check every file of the cache against its manifest (header and length: channels, size, "
                        "dtype; no data read) without building; exit 2 naming the files that do not match")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. method=lfd data.val_size=[256,512]")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    parse_method(cfg.distill.method)
    if args.batch < 1 or args.max_gb <= 0 or args.check < 0 or args.samples < 0:
        raise UserError("--batch must be at least 1, --max-gb above 0, --check and --samples at least 0")
    if args.mode == "all":
        return all_modes(cfg, args, outputs_of(cfg, args))
    if args.mode:
        cfg.distill.cache_mode = args.mode
    outputs = outputs_of(cfg, args)
    out = cache_folder(cfg, args)
    if args.verify:
        return verify(out, run_key(cfg, args), cfg, args)
    manifest, report = build_and_check(cfg, args, out, outputs)
    if cfg.data.unlabeled:
        build_footage(cfg, args, outputs)
    stored = ", ".join(f"{k} (stride {v['stride']}, {v['channels']} ch)" for k, v in manifest["outputs"].items())
    print(f"teacher cache {out} ({cfg.distill.cache_mode}): {len(manifest['image_ids'])} images, outputs {stored}, "
          f"built in {manifest['build_seconds']:.1f}s")
    if report:
        for view in ("geometry", "as_trained"):
            r = report[view]
            print(f"cached vs online logits on {report['samples']} augmented crops ({view}, colour jitter "
                  f"{r['color_jitter']:g}): argmax agreement {100 * r['argmax_agreement']:.2f} %, "
                  f"mean KL {r['mean_kl']:.4f}")
        print(json.dumps({"agreement": str(out / "agreement.json")}))
    mode = "" if cfg.distill.cache_mode == "single" else f" distill.cache_mode={cfg.distill.cache_mode}"
    print(f"use it with: python -m train.distill --config {args.config or '...'} distill.teacher_cache={out}{mode} "
          f"teacher={args.teacher}")
    return 0


def build_footage(cfg: Any, args: argparse.Namespace, outputs: list[str]) -> Path:
    """The transfer set's cache (data.unlabeled), where train.distill looks for it (distill.footage_cache:
    auto, under distill.cache_dir, or a folder), built or finished; same manifest rules as the training split's."""
    from train.distill import footage_cache_config
    from train.teachers.cache_build import source_reader

    fcfg = footage_cache_config(cfg)
    _, ids, provenance = source_reader(fcfg, footage=True)
    key = cache_key(teacher_sha256(args.teacher), fcfg, ids, provenance)
    where = fcfg.distill.footage_cache
    out = auto_path(fcfg.distill.cache_dir, key) if where == "auto" else Path(where)
    build_cache(args.teacher, fcfg, out, outputs, args.max_gb, args.batch, args.device, footage=True)
    manifest = check_cache(out, key, outputs)
    print(f"footage teacher cache {out} ({fcfg.distill.cache_mode}): {len(manifest['image_ids'])} frames, built in "
          f"{manifest['build_seconds']:.1f}s")
    return out


def outputs_of(cfg: Any, args: argparse.Namespace) -> list[str]:
    outputs = ([o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs
               else default_outputs(cfg.distill.method, teacher_reads(cfg.distill)))
    if not outputs:
        raise UserError("--outputs is empty; give e.g. --outputs logits,decoder")
    check_teacher(args.teacher)
    return outputs


def cache_folder(cfg: Any, args: argparse.Namespace, sub: str | None = None) -> Path:
    """--out (/ `sub` with --mode all), else the folder distill.teacher_cache=auto uses for cfg's mode."""
    if args.out:
        return Path(args.out) / sub if sub else Path(args.out)
    return auto_path(cfg.distill.cache_dir, run_key(cfg, args))


def run_key(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The cache key of this teacher, data and mode."""
    from train.data import build_readers
    from train.teachers.cache_build import image_names

    return cache_key(teacher_sha256(args.teacher), cfg, image_names(build_readers(cfg.data)[0]))


def build_and_check(cfg: Any, args: argparse.Namespace, out: Path, outputs: list[str]
                    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Build (or finish) the cache at `out` in cfg's mode, then `--check` it: (manifest, agreement or None)."""
    key = run_key(cfg, args)
    samples = max(args.samples, args.check) if cfg.distill.cache_mode == "exact" else None
    build_cache(args.teacher, cfg, out, outputs, args.max_gb, args.batch, args.device, samples=samples)
    manifest = check_cache(out, key, outputs)
    report = None
    if args.check:
        report = measure_agreement(cfg, args.teacher, out, manifest, args.check)
        atomic_write_json(out / "agreement.json", report)
    return manifest, report


def all_modes(cfg: Any, args: argparse.Namespace, outputs: list[str]) -> int:
    """`--mode all`: build (or reuse) each mode's cache for this teacher and print one table."""
    if not args.check:
        raise UserError("--mode all compares the modes' agreement with the online teacher: give --check N")
    if args.verify:
        raise UserError("--verify checks one cache: give --mode single, multiscale or exact")
    rows = []
    for mode in MODES:
        c = copy.deepcopy(cfg)
        c.distill.cache_mode = mode
        if mode == "single":
            c.distill.cache_topk = 0
        out = cache_folder(c, args, mode)
        manifest, report = build_and_check(c, args, out, outputs)
        assert report is not None
        rows.append({"mode": mode, "folder": str(out),
                     "agree_geometry": 100 * report["geometry"]["argmax_agreement"],
                     "agree_as_trained": 100 * report["as_trained"]["argmax_agreement"],
                     "kl_geometry": report["geometry"]["mean_kl"], "kl_as_trained": report["as_trained"]["mean_kl"],
                     "size_mb": disk_bytes(out) / 2**20, "build_s": float(manifest["build_seconds"]),
                     "views": file_count(manifest) // max(1, len(manifest["outputs"]))})
    from runtime.report import format_table

    print(f"\nteacher {args.teacher}: cached vs online logits on {args.check} augmented crops (seed "
          f"{cfg.train.seed}); agreement in %, KL(online || cache) per pixel")
    print(format_table(rows, ["mode", "agree_geometry", "agree_as_trained", "kl_geometry", "kl_as_trained", "size_mb",
                              "build_s", "views"], digits=3,
                       headers=["mode", "agree (geometry)", "agree (as trained)", "KL (geometry)", "KL (as trained)",
                                "MB on disk", "build s", "files/output"]))
    summary = (Path(args.out) if args.out else Path(cfg.distill.cache_dir)) / "agreement-modes.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(summary, {"teacher": args.teacher, "samples": args.check, "outputs": outputs, "rows": rows})
    print(json.dumps({"agreement": str(summary)}))
    return 0


def verify(out: Path, key: dict, cfg: Any, args: argparse.Namespace) -> int:
    """`--verify`: 0 when every file of the cache at `out` matches its manifest, else a UserError (exit 2)."""
    manifest = read_manifest(out)
    if manifest is None:
        raise UserError(f"{out} is not a teacher target cache (no manifest.json); build it with python -m "
                        f"train.cache --teacher {args.teacher} --config {args.config or 'C.yaml'} --out {out}")
    check_cache(out, key, list(manifest["outputs"]))
    bad = verify_files(out, manifest, cfg=cfg)
    files = file_count(manifest, cfg)
    if bad:
        listing = "; ".join(f"{f}: {p}" for f, p in bad[:3]) + ("; ..." if len(bad) > 3 else "")
        raise UserError(f"{len(bad)} of {files} files of the teacher cache {out} do not match its manifest "
                        f"({listing}); rebuild them with the same command without --verify")
    print(f"teacher cache {out}: all {files} files match the manifest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
