"""`python -m train.check`: the training side of this machine, and with `--speed` a short self-test.

    python -m train.check                      # torch, CUDA, cuDNN, NCCL, bf16/fp16, timm: one table + JSON
    python -m train.check --speed              # + a self-test and speed test on the device (about 5 min)
    python -m train.check --speed --size 256x512 --steps 30 --device cuda   # bigger, e.g. on an H100

The self-test (`--speed`) trains, on synthetic scenes at `--size`, for `--steps` iterations each:
a tiny teacher; then a tiny and a real student recipe alone, with KD and with LFD from the online teacher,
and KD and LFD from the teacher target cache, with AMP and channels_last as training uses them on the
device. Each row: losses finite, loss falling (mean of the last third below the first third), seconds per
iteration and peak memory. Then a one-process NCCL (CUDA) or gloo (CPU) process group with an all-reduce.
Every skipped part says why. `make check FULL=1` runs it after `python -m runtime.check`, and then the
deployment side's check, which trains the same tiny student with `train_tiny_student` below.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.check import COLUMNS, add_json_option, row
from runtime.errors import UserError, cli_main

TINY_TEACHER = "tiny_deeplabv3_resnet10t"
STUDENTS = ("tiny_lraspp_mobilenetv3", "lraspp_mobilenetv3_large")


def report(device_pref: str = "auto") -> list[dict[str, Any]]:
    """torch, torchvision, timm; CUDA, cuDNN, NCCL; the device and its AMP dtypes."""
    import torch

    from runtime.machine import cpu_has_bf16
    from train.engine.distributed import resolve_device

    rows = [row("torch", "version", torch.__version__, "ok")]
    for dist in ("torchvision", "timm"):
        try:
            rows.append(row("torch", dist, metadata.version(dist), "ok"))
        except metadata.PackageNotFoundError:
            rows.append(row("torch", dist, None, "missing", f"pip install {dist}"))
    rows.append(row("torch", "CPU threads", torch.get_num_threads()))
    rows.append(row("torch", "CPU bf16 autocast", "native" if cpu_has_bf16() else "emulated (training runs fp32)"))
    if torch.cuda.is_available():
        rows.append(row("cuda", "CUDA", torch.version.cuda, "ok"))
        rows.append(row("cuda", "cuDNN", torch.backends.cudnn.version(), "ok"))
        nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
        rows.append(row("cuda", "NCCL", ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
                        "ok" if nccl else "missing"))
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append(row("cuda", f"GPU {i}", f"{p.name}, compute {p.major}.{p.minor}, "
                                                f"{p.total_memory // 2**20} MiB", "ok"))
        rows.append(row("cuda", "bf16", "yes" if torch.cuda.is_bf16_supported() else "no (AMP uses fp16)"))
    else:
        rows.append(row("cuda", "CUDA", None, "missing", "no CUDA GPU visible to PyTorch (CPU training only)"))
    try:
        rows.append(row("torch", "training device", str(resolve_device(device_pref)), "ok"))
    except UserError as e:
        rows.append(row("torch", "training device", device_pref, "fail", str(e)))
    return rows


# --- the self-test -------------------------------------------------------------------------------------

def _losses(run: Path) -> list[float]:
    out = []
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            out.append(float(rec["loss"]))
    return out


def _train_row(name: str, results: dict[str, Any], run: Path, reads_cache: bool = False) -> dict[str, Any]:
    losses = _losses(run)
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    third = max(1, len(losses) // 3)
    falling = finite and sum(losses[-third:]) / third < sum(losses[:third]) / third
    status = "ok" if finite and falling else "fail" if not finite else "warn"
    note = ("" if falling else "loss did not fall over so few steps" if finite else "loss not finite") + \
        (" (from the teacher cache)" if reads_cache else "")
    return row("self-test", name, f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else None, status, note.strip(),
               s_per_iter=results["s_per_iter"], peak_mb=results["peak_mem_mb"], precision=results["precision"])


def _overrides(root: Path, size: tuple[int, int], steps: int, device: str, batch: int) -> list[str]:
    h, w = size
    return [f"budget={steps}", f"train.runs_dir={root / 'runs'}", f"train.device={device}", "train.log_every=1",
            "train.val_every=0", "train.ckpt_every=0", "dataset=synthetic", f"data.synthetic.size={h}x{w}",
            f"data.synthetic.num_train={max(4, 2 * batch)}", "data.synthetic.num_val=2",
            "data.synthetic.cache=false", f"data.crop_size={h}x{w}", f"batch={batch}", "data.val_batch_size=2",
            "data.workers=0", "optim.name=adamw", "optim.lr=0.001", f"distill.cache_dir={root / 'cache'}"]


def self_test(size: tuple[int, int], steps: int, device: str, batch: int, work: Path) -> list[dict[str, Any]]:
    """The rows of the self-test and speed test (see the module docstring)."""
    import torch

    from train.config import load_config
    from train.teacher import train_teacher

    rows: list[dict[str, Any]] = []
    base = _overrides(work, size, steps, device, batch)
    cfg = load_config(None, [*base, f"recipe={TINY_TEACHER}", "name=teacher"])
    t0 = time.perf_counter()
    res = train_teacher(cfg, "student")
    rows.append(_train_row(f"teacher {TINY_TEACHER}", res, work / "runs" / "teacher"))
    teacher = res["final_checkpoint"]
    print(f"[check] teacher trained in {time.perf_counter() - t0:.1f}s", flush=True)
    for recipe in STUDENTS:
        for method, cache in (("baseline", "off"), ("kd", "off"), ("lfd", "off"), ("kd", "auto"), ("lfd", "auto")):
            name, res = _student_run(base, recipe, method, cache, teacher)
            rows.append(_train_row(f"{recipe} {method}", res, work / "runs" / name, reads_cache=cache == "auto"))
            print(f"[check] {name}: {res['s_per_iter']:.3f} s/iter", flush=True)
    rows.append(_ddp_row(device))
    del torch
    return rows


def _student_run(base: list[str], recipe: str, method: str, cache: str = "off", teacher: str | Path | None = None
                 ) -> tuple[str, dict[str, Any]]:
    """Train one student run of the self-test (`teacher`: the online teacher, or None for the student
    alone); returns its run name and results."""
    from train.config import load_config
    from train.distill import distill

    name = f"{recipe}-{method}" + ("-cache" if cache == "auto" else "")
    keys = [*base, f"recipe={recipe}", f"method={method}", f"name={name}", f"distill.teacher_cache={cache}"]
    return name, distill(load_config(None, keys + ([f"teacher={teacher}"] if teacher is not None else [])))


def train_tiny_student(work: Path, size: tuple[int, int], steps: int, device: str, batch: int) -> Path:
    """The first self-test student trained alone, as the self-test trains it, under `work`; returns its final
    checkpoint (for checks that need a real student checkpoint)."""
    name, _ = _student_run(_overrides(work, size, steps, device, batch), STUDENTS[0], "baseline")
    return work / "runs" / name / "final.pt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_row(device: str) -> dict[str, Any]:
    """A one-process group (NCCL on CUDA, gloo on CPU) and an all-reduce."""
    import torch
    import torch.distributed as dist

    from train.engine.distributed import resolve_device

    dev = resolve_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist.is_initialized():
        return row("ddp", f"{backend} process group", None, "skipped", "a process group is already running")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    try:
        dist.init_process_group(backend, rank=0, world_size=1)
        t = torch.ones(4, device=dev)
        dist.all_reduce(t)
        ok = bool(torch.equal(t.cpu(), torch.ones(4)))
        return row("ddp", f"{backend} process group", "all-reduce of one process", "ok" if ok else "fail",
                   "" if dev.type == "cuda" else "NCCL needs CUDA: gloo checked instead")
    except Exception as e:  # noqa: BLE001 - the point is to report it
        return row("ddp", f"{backend} process group", None, "fail", f"{type(e).__name__}: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def add_run_options(p: argparse.ArgumentParser, size_note: str = "") -> None:
    """--size, --steps, --batch and --device of the tiny training runs (see `run_settings`)."""
    p.add_argument("--size", default=None, help="image size H x W of the tiny runs (default 128x256 on a GPU, "
                                                f"64x128 on a CPU){size_note}")
    p.add_argument("--steps", type=int, default=None, help="iterations per run (default 30 on a GPU, 12 on a CPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8 on a GPU, 2 on a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")


def run_settings(args: argparse.Namespace) -> tuple[tuple[int, int], int, int]:
    """(size, steps, batch) of the tiny runs: what `add_run_options` was given, else the device's defaults."""
    import torch

    from runtime.cli import parse_size

    gpu = args.device != "cpu" and torch.cuda.is_available()
    size = parse_size(args.size) or ((128, 256) if gpu else (64, 128))
    steps = args.steps or (30 if gpu else 12)
    batch = args.batch or (8 if gpu else 2)
    if steps < 3 or batch < 1:
        raise UserError("--steps must be at least 3 and --batch at least 1")
    return size, steps, batch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed", action="store_true", help="add the self-test and speed test (minutes)")
    add_run_options(p)
    add_json_option(p, "train")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.check import finish_report
    from runtime.io import check_writable

    check_writable(args.json, "--json file")
    rows = report(args.device)
    if args.speed:
        size, steps, batch = run_settings(args)
        with tempfile.TemporaryDirectory(prefix="lfd-check-") as d:
            rows += self_test(size, steps, args.device, batch, Path(d))
    cols = [*COLUMNS, *(["s_per_iter", "peak_mb", "precision"] if args.speed else [])]
    return finish_report(rows, args.json, cols, digits=3, speed=args.speed)


if __name__ == "__main__":
    raise SystemExit(main())
