"""Rank a teacher's layers by knowledge quality for FKD (docs/methods.md, "FKD"):

    python -m train.fkd_layers --teacher runs/demo/teacher/best.pt --images 200 --top-k 2 --out fkd.yaml

Runs the frozen teacher on a few hundred training images (runtime readers + runtime.preprocess at the
teacher's input size), takes every candidate layer (each encoder stage and `decoder`) from the same
forward pass, keeps a uniform random sample of up to `--per-class` pixels per class per layer (labels
nearest-downsampled to the layer's size), and computes separation S, information I, efficiency E and
Q = S + √(I·E) per layer (train/teachers/knowledge_quality.py). Prints the table, writes it as JSON, and writes a
config snippet with the top-k (student stage, teacher layer) pairs, each teacher layer paired with the
student stage of the same stride (the deepest if several).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from runtime.cli import parse_size
from runtime.datasets import SegmentationDataset
from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_json, atomic_write_text
from runtime.metadata import DataInfo
from runtime.preprocess import preprocess_for, resize_label
from runtime.report import format_table
from train.config import ModelConfig
from train.engine.checkpoint import describe_arch, model_from_checkpoint, training_data
from train.engine.distributed import resolve_device
from train.losses.base import DEEP
from train.models import build_model, feature_info
from train.models.output import FeatureInfo
from train.teachers.knowledge_quality import knowledge_quality
from train.teachers.source import CHECKPOINT, FOREIGN, check_teacher, teacher_kind
from train.torch_env import torch_environment


class PixelReservoir:
    """A uniform random sample, without replacement, of at most `per_class` pixels per class among all
    pixels added so far: every pixel gets a uniform random key and each class keeps its `per_class`
    smallest keys. Memory stays K · per_class · C however many images are added."""

    def __init__(self, per_class: int, generator: torch.Generator) -> None:
        self.per_class = per_class
        self.generator = generator
        self.keys: dict[int, torch.Tensor] = {}
        self.x: dict[int, torch.Tensor] = {}

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add pixels x [n, C] with labels y [n] (already without ignored pixels)."""
        y = y.cpu()
        keys = torch.rand(y.numel(), generator=self.generator)
        for c in torch.unique(y).tolist():
            idx = torch.nonzero(y == c).flatten()
            k = keys[idx]
            if k.numel() > self.per_class:  # the batch's own best keys first: gather few feature rows
                top = torch.topk(k, self.per_class, largest=False).indices
                idx, k = idx[top], k[top]
            rows = x[idx.to(x.device)].float().cpu()
            k = torch.cat([self.keys[c], k]) if c in self.keys else k
            xs = torch.cat([self.x[c], rows]) if c in self.x else rows
            if k.numel() > self.per_class:
                top = torch.topk(k, self.per_class, largest=False).indices
                k, xs = k[top], xs[top]
            self.keys[c], self.x[c] = k, xs

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """X [n, C] float32 and y [n] int64, grouped by class."""
        classes = sorted(self.x)
        if not classes:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return (torch.cat([self.x[c] for c in classes]),
                torch.cat([torch.full((self.x[c].shape[0],), c, dtype=torch.long) for c in classes]))


def pixels(features: torch.Tensor, labels: torch.Tensor, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N x C x h x w features and N x H x W labels -> valid pixel rows [n, C] and labels [n]
    (labels nearest-downsampled to h x w, ignored pixels dropped)."""
    n, c, h, w = features.shape
    y = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long().flatten()
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, c)
    keep = y != ignore
    return x[keep], y[keep]


def student_candidates(reduction: int, student: list[FeatureInfo]) -> list[str]:
    """The student encoder stages in the order FKD pairs them with a teacher layer of stride `reduction`:
    the same stride first, then by distance in octaves (|log2(stride_s / stride_t)|), and at equal
    distance the coarser, then the wider, then the deeper stage. FKD pools the finer of the two maps to the coarser one,
    so every stage can be paired; a closer stride loses less detail."""
    import math

    stages = [(i, f) for i, f in enumerate(student) if f.name.startswith("stage")]
    ranked = sorted(stages, key=lambda p: (abs(math.log2(p[1].reduction / reduction)), -p[1].reduction,
                                           -p[1].channels, -p[0]))
    return [f.name for _, f in ranked]


def match_student_stage(reduction: int, student: list[FeatureInfo]) -> str | None:
    """The student stage a teacher layer of stride `reduction` pairs with (see `student_candidates`)."""
    order = student_candidates(reduction, student)
    return order[0] if order else None


def rank_layers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `rank` (1 = highest Q) to every row; rows keep their order."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["Q"])
    for r, i in enumerate(order, 1):
        rows[i]["rank"] = r
    return rows


def top_pairs(rows: list[dict[str, Any]], student: list[FeatureInfo], k: int,
              notes: list[str] | None = None) -> list[list[str]]:
    """[[student stage, teacher layer], ...] for the k best-ranked teacher layers, always those k.

    Each takes its first student candidate (`student_candidates`) not already taken by a better-ranked
    layer; when its first choice is taken, a line is added to `notes` naming both and the stage chosen.
    With more teacher layers than student stages, the extra layers share the closest stage."""
    pairs: list[list[str]] = []
    used: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r["rank"])[:k]:
        order = student_candidates(int(row["stride"]), student)
        if not order:
            break
        free = [name for name in order if name not in used]
        chosen = free[0] if free else order[0]
        if chosen != order[0] and notes is not None:
            notes.append(f"teacher {row['layer']} (stride {row['stride']}) would pair with student {order[0]}, "
                         f"already paired with teacher {used[order[0]]}; using student {chosen} instead")
        used.setdefault(chosen, row["layer"])
        pairs.append([chosen, row["layer"]])
    return pairs


def fkd_snippet(pairs: list[list[str]], teacher: str, recipe: str, rows: list[dict[str, Any]],
                teacher_layers: list[str] | None = None) -> str:
    """The YAML config snippet (`distill: {method: fkd, fkd: {pairs: ...}}`) with a comment header; for a
    foreign teacher also the `teacher` and the `teacher_layers` to hook."""
    q = {r["layer"]: r["Q"] for r in rows}
    lines = [f"# FKD layer choice for the teacher {teacher} (python -m train.fkd_layers): the top-{len(pairs)} teacher",
             f"# layers by knowledge quality Q, each paired with the closest-stride free {recipe} student stage",
             "# (FKD pools the finer of the two maps to the coarser one).",
             *[f"#   {t}: Q = {q[t]:.4f} -> student {s}" for s, t in pairs]]
    distill: dict[str, Any] = {"method": "fkd", "fkd": {"pairs": pairs}}
    if teacher_layers:
        distill.update(teacher=teacher, teacher_layers=teacher_layers)
    body = yaml.safe_dump({"distill": distill}, sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body


@torch.no_grad()
def collect(model: torch.nn.Module, dataset: SegmentationDataset, info: DataInfo, size: tuple[int, int],
            images: int, per_class: int, batch: int, seed: int, device: torch.device
            ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int]:
    """Layer name -> (X, y) pixel samples over `images` random images of `dataset`; also the image count."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.permutation(len(dataset))[:images].tolist())
    gen = torch.Generator().manual_seed(seed)
    reservoirs: dict[str, PixelReservoir] = {}
    for start in range(0, len(chosen), batch):
        samples = [dataset[i] for i in chosen[start:start + batch]]
        x = torch.from_numpy(preprocess_for(info, [s[0] for s in samples], size)).to(device)
        y = torch.from_numpy(np.stack([resize_label(s[1], size) for s in samples])).to(device)
        out = model(x)
        for name, feat in out.features.items():
            res = reservoirs.setdefault(name, PixelReservoir(per_class, gen))
            res.add(*pixels(feat, y, info.ignore_index))
    return {name: r.samples() for name, r in reservoirs.items()}, len(chosen)


def layer_table(samples: dict[str, tuple[torch.Tensor, torch.Tensor]], info: list[FeatureInfo]
                ) -> list[dict[str, Any]]:
    """One row per layer (in the model's feature order): layer, stride, width, S, I, E, Q, n, d, rank."""
    rows = []
    for f in info:
        if f.name not in samples:
            continue
        x, y = samples[f.name]
        q = knowledge_quality(x, y)
        rows.append({"layer": f.name, "stride": f.reduction, "width": f.channels, **q})
    return rank_layers(rows)


FOREIGN_LAYERS = 24  # a foreign teacher's layers ranked by default (evenly spaced over its 4-D layers)


def foreign_teacher(args: argparse.Namespace, device: torch.device) -> tuple[Any, DataInfo, dict[str, Any], Any]:
    """(teacher, DataInfo, pseudo-checkpoint, dataset) for a foreign teacher (hf:, torchvision:, smp:): the data
    comes from --data or --config (it records none), its classes mapped onto the data's, `--layers` hooked
    (default: FOREIGN_LAYERS of its 4-D layers, evenly spaced)."""
    from train.config import load_config
    from train.data import build_readers
    from train.teachers.foreign import layer_names
    from train.teachers.source import load_teacher

    if not args.config and not args.data:
        raise UserError(f"the foreign teacher {args.teacher} records no training data: pass --config C.yaml (its data "
                        f"block) or --data name:root")
    cfg = load_config(args.config) if args.config else load_config(None, [f"data.dataset={args.data}"])
    if args.data:
        cfg.data.dataset = args.data
    cfg.data.train_split = args.split
    dataset = build_readers(cfg.data)[0]
    info = dataclasses.replace(dataset.data_info(), mean=cfg.data.mean, std=cfg.data.std)
    layers = [n.strip() for n in (args.layers or "").split(",") if n.strip()]
    if not layers:
        probe = load_teacher(args.teacher, dataset.classes, cfg.data.mean, cfg.data.std, cfg.distill, device)
        names = layer_names(probe)  # type: ignore[arg-type]
        step = max(1, len(names) // FOREIGN_LAYERS)
        layers = names[::step][-FOREIGN_LAYERS:]
    cfg.distill.teacher_layers = layers
    model = load_teacher(args.teacher, dataset.classes, cfg.data.mean, cfg.data.std, cfg.distill, device)
    return model, info, {"arch": None, "data": info.to_dict()}, dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.fkd_layers",
        description="Rank every candidate layer of a teacher (encoder stages and decoder) by knowledge quality "
                    "Q = S + sqrt(I*E) (separation, information, efficiency of per-class pixel features), print the "
                    "table, write it as JSON and write an FKD config snippet with the top-k "
                    "(student stage, teacher layer) pairs.",
        epilog="example:\n  python -m train.fkd_layers --teacher runs/demo/teacher/best.pt --images 200 --top-k 2 "
               "--student-recipe deeplabv3_resnet18 --out runs/layers/fkd.yaml\n"
               "then: python -m train.distill --config runs/layers/fkd.yaml ... or copy its distill block",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True,
                   help="teacher: a .pt checkpoint, or hf:DIR, torchvision:NAME:WEIGHTS, smp:DIR (then --config and "
                        "--data name the student's dataset, whose classes the teacher's are mapped onto)")
    p.add_argument("--layers", help="a foreign teacher's layers to rank, comma-separated module names (default: up "
                                    f"to {FOREIGN_LAYERS} of its layers with 4-D outputs, evenly spaced)")
    p.add_argument("--data", help="dataset as name:root, or synthetic (default: the teacher's training dataset)")
    p.add_argument("--split", default="train", help="split to sample images from (default: train)")
    p.add_argument("--images", type=int, default=200, help="number of random images (default 200)")
    p.add_argument("--per-class", type=int, default=500, help="pixel samples per class and layer (default 500)")
    p.add_argument("--top-k", type=int, default=2, help="number of pairs in the snippet (default 2)")
    p.add_argument("--config", help="the distillation recipe YAML: its student (model.recipe) is the default "
                                    "--student-recipe")
    p.add_argument("--student-recipe", default=None,
                   help="student recipe whose stages are paired with the chosen teacher layers (default: the "
                        f"--config's model.recipe, else {ModelConfig().recipe}); printed")
    p.add_argument("--size", help="input size HxW (default: the teacher's input size)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image and pixel sampling (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", help="config snippet path (default runs/layers-<teacher stem>/fkd.yaml); "
                                 "the JSON table goes beside it with the suffix .json")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for opt in ("images", "per_class", "top_k", "batch"):
        if getattr(args, opt) < 1:
            raise UserError(f"--{opt.replace('_', '-')} {getattr(args, opt)}: give at least 1")
    check_teacher(args.teacher)
    device = resolve_device(args.device)
    foreign = teacher_kind(args.teacher) == FOREIGN
    if foreign:
        model, info, ckpt, dataset = foreign_teacher(args, device)
    else:
        if teacher_kind(args.teacher) != CHECKPOINT:
            raise UserError(f"{args.teacher} is an exported model, which gives logits only: it has no layers to "
                            f"rank; pass the PyTorch teacher")
        model, info, ckpt = model_from_checkpoint(args.teacher, device)
    if args.student_recipe is None:
        from train.config import load_config

        args.student_recipe = load_config(args.config).model.recipe if args.config else ModelConfig().recipe
    print(f"pairing with the student {args.student_recipe}"
          + (f" (from {args.config})" if args.config and args.student_recipe else ""), file=sys.stderr)
    student = build_model(ModelConfig(recipe=args.student_recipe), info.num_classes).feature_info
    if not foreign:
        dataset = training_data(ckpt, info, args.data).open(args.split)
    if len(dataset) == 0:
        raise UserError(f"the {args.split} split of {args.data or 'the teacher dataset'} has no images")
    size = parse_size(args.size) or (int(info.input_size[0]), int(info.input_size[1]))
    samples, n_images = collect(model, dataset, info, size, args.images, args.per_class, args.batch, args.seed,
                                device)
    rows = layer_table(samples, [f for f in model.feature_info if f.name != DEEP] if foreign  # type: ignore[union-attr]
                       else feature_info(model))
    notes: list[str] = []
    pairs = top_pairs(rows, student, args.top_k, notes)
    chosen = {t: st for st, t in pairs}
    for r in rows:
        r["paired_with"] = chosen.get(r["layer"], "")
    out = Path(args.out or f"runs/layers-{Path(args.teacher).stem}/fkd.yaml")
    report = {
        "teacher": str(args.teacher),
        "teacher_arch": describe_arch(ckpt["arch"]) if not foreign else str(args.teacher),
        "data": args.data or "teacher's training dataset",
        "split": args.split,
        "images": n_images,
        "per_class": args.per_class,
        "size": list(size),
        "student_recipe": args.student_recipe,
        "student_stages": [{"name": f.name, "stride": f.reduction, "width": f.channels} for f in student],
        "layers": rows,
        "pairs": pairs,
        "pairing_notes": notes,
        "env": torch_environment(device),
    }
    atomic_write_json(out.with_suffix(".json"), report)
    layers = [t for _, t in pairs] if foreign else None
    atomic_write_text(out, fkd_snippet(pairs, str(args.teacher), args.student_recipe, rows, layers))
    print(format_table(rows, ["layer", "stride", "width", "S", "I", "E", "Q", "rank", "paired_with"],
                       headers=["layer", "stride", "width", "S", "I", "E", "Q", "rank", "chosen: student"], digits=4))
    for note in notes:
        print(f"note: {note}")
    print(f"top-{len(pairs)} pairs [student, teacher]: {pairs}")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
