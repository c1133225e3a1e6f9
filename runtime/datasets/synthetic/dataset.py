"""Built-in synthetic street scenes: the default dataset, so that everything runs with no download.

Each sample is a street seen from a car: a pinhole camera at height ~1.5 m looks down a straight street,
so the road, sidewalks and facades converge to a vanishing point and everything is scaled by depth. It is
rendered with OpenCV polygons into an RGB image and its label map at the same time (painter's order, far
to near, so occlusion is exact), then lit, textured, blurred and given sensor noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime.datasets.base import BadSample, Sample, SegmentationDataset, read_image, read_label
from runtime.datasets.folder import write_classes_yaml, write_sample
from runtime.datasets.synthetic.draw import CLASSES, GENERATOR_VERSION, PALETTE, SPLIT_CODES
from runtime.datasets.synthetic.scene import render_scene
from runtime.errors import UserError
from runtime.io import atomic_write_json
from runtime.metadata import DataInfo


class SyntheticStreets(SegmentationDataset):
    """Procedural street scenes with 16 Cityscapes classes and Cityscapes colours.

    Classes (train ids): 0 road, 1 sidewalk, 2 building, 3 wall, 4 fence, 5 pole, 6 traffic light,
    7 traffic sign, 8 vegetation, 9 terrain, 10 sky, 11 person, 12 rider, 13 car, 14 truck, 15 bicycle;
    255 = ignore (the ego vehicle's bonnet at the bottom of some frames).

    The scenes need context and shape, not only colour: road, sidewalk and terrain share greys; building,
    wall, fence, pole and truck share greys and beiges; far buildings fade towards the sky colour; people,
    cars and riders wear random colours; a rider differs from a person only by sitting on a bicycle.
    There are thin and small objects (poles, signs, traffic lights, distant people and bicycles),
    occlusion, per-class texture, windows, lane markings, shadows, global lighting and colour casts,
    blur and sensor noise.

    Knobs:
      num_train, num_val: samples in the train and val splits (split "test" has num_val samples too).
      num_footage: samples in split "footage", scenes of their own for unlabeled distillation frames
        (FootageReader's `synthetic[:N]` source); not a recorded option (spec.RECORDED_SYNTHETIC).
      size: (H, W) rendered size.
      seed: sample i of split s comes from its own generator seeded by (seed, s, i): any index can be
        made alone, in any order, in any worker, and is always the same.
      difficulty: scales clutter and object counts, thin/small objects, colour overlap, noise and blur
        (0.5 easy, 1.0 default, 1.5 hard).
      cache: keep rendered samples as PNGs in `cache_dir` (default
        `data/cache/synthetic-<hash of seed, size, difficulty, version>/` under the working directory,
        or under $LFD_EDGE_CACHE), in the folder-dataset layout, and reuse them.
    """

    classes = CLASSES
    palette = PALETTE
    needs_root = False
    layout = "(none: generated; optional cache in the folder layout images/<split>/, labels/<split>/)"

    def __init__(self, root: str | Path | None = None, split: str = "train", skip_bad: bool = False,
                 num_train: int = 400, num_val: int = 60, size: tuple[int, int] = (256, 512), seed: int = 0,
                 difficulty: float = 1.0, cache: bool = True, cache_dir: str | Path | None = None,
                 num_footage: int = 2000) -> None:
        super().__init__(root, split, skip_bad)
        if split not in SPLIT_CODES:
            raise UserError(f"unknown synthetic split '{split}'; choose one of {', '.join(SPLIT_CODES)}")
        h, w = (int(v) for v in size)
        if h < 16 or w < 16:
            raise UserError(f"synthetic size {h}x{w} is too small; use at least 16x16")
        if not 0.0 <= difficulty <= 3.0:
            raise UserError(f"synthetic difficulty {difficulty} is outside 0..3")
        self.size = (h, w)
        self.seed = int(seed)
        self.difficulty = float(difficulty)
        self.length = int({"train": num_train, "footage": num_footage}.get(split, num_val))
        self.cache_dir: Path | None = None
        if cache:
            # `root`, when given, is taken as the cache folder (so `synthetic:/path` exports there).
            explicit = cache_dir or root
            self.cache_dir = Path(explicit) if explicit else writable_cache_dir(
                default_cache_dir(self.size, self.seed, self.difficulty))
            if self.cache_dir is not None:
                self._check_cache_params(self.cache_dir / "params.json")

    def __len__(self) -> int:
        return self.length

    def params(self) -> dict[str, object]:
        return {"generator_version": GENERATOR_VERSION, "size": list(self.size), "seed": self.seed,
                "difficulty": self.difficulty}

    def name(self, i: int) -> str:
        return f"{self.split}_{i:05d}"

    def load(self, i: int) -> Sample:
        name = self.name(i)
        if self.cache_dir is None:
            image, label = render_scene(self.size, self.seed, self.split, i, self.difficulty)
            return image, label, name
        img_path = self.cache_dir / "images" / self.split / f"{name}.png"
        lbl_path = self.cache_dir / "labels" / self.split / f"{name}.png"
        if img_path.is_file() and lbl_path.is_file():
            try:
                image, label = read_image(img_path), read_label(lbl_path)
                if image.shape[:2] == self.size and label.shape == self.size:
                    return image, label, name
            except BadSample:
                pass  # a damaged cache entry is rendered again below
        image, label = render_scene(self.size, self.seed, self.split, i, self.difficulty)
        self._write_cache(name, image, label)
        return image, label, name

    def _check_cache_params(self, path: Path) -> None:
        """A cache folder holds samples of one parameter set; refuse to mix in samples of another."""
        if not path.is_file():
            return
        try:
            cached = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return  # unreadable: it is rewritten with the first sample
        if cached != self.params():
            raise UserError(f"the synthetic cache {path.parent} was made with {cached}, not {self.params()}; "
                            "choose another cache_dir or delete that folder")

    def _write_cache(self, name: str, image: np.ndarray, label: np.ndarray) -> None:
        if self.cache_dir is None:
            return
        if not (self.cache_dir / "classes.yaml").is_file():
            write_classes_yaml(self.cache_dir, self.classes, self.palette)
            atomic_write_json(self.cache_dir / "params.json", self.params())
        write_sample(self.cache_dir, self.split, name, image, label)

    def data_info(self, input_size: tuple[int, int] | None = None) -> DataInfo:  # type: ignore[override]
        return super().data_info(input_size or self.size)


_FALLBACK_SAID: set[str] = set()


def writable_cache_dir(preferred: Path) -> Path | None:
    """`preferred` when it can be written (or already holds a cache), else the same name under the user's
    cache folder ($XDG_CACHE_HOME or ~/.cache, /lfd-edge), else None (samples are rendered, not cached);
    a line says which, once per process."""
    from runtime.io import check_writable

    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lfd-edge" / preferred.name
    for i, candidate in enumerate((preferred, user)):
        try:
            check_writable(candidate, "synthetic cache", folder=True)
        except UserError:
            continue
        if i and str(preferred) not in _FALLBACK_SAID:
            _FALLBACK_SAID.add(str(preferred))
            print(f"note: {preferred.parent} is not writable; caching synthetic samples in {candidate}",
                  file=sys.stderr)
        return candidate
    if str(preferred) not in _FALLBACK_SAID:
        _FALLBACK_SAID.add(str(preferred))
        print(f"note: neither {preferred.parent} nor {user.parent} is writable; rendering synthetic samples "
              f"without a cache", file=sys.stderr)
    return None


def default_cache_dir(size: tuple[int, int], seed: int, difficulty: float) -> Path:
    """`$LFD_EDGE_CACHE` or `./data/cache`, then `synthetic-<12 hex of the parameters' hash>`."""
    key = json.dumps({"v": GENERATOR_VERSION, "size": list(size), "seed": seed, "difficulty": difficulty},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(os.environ.get("LFD_EDGE_CACHE", "data/cache")) / f"synthetic-{digest}"


def write_folder_dataset(out_dir: str | Path, num_train: int = 400, num_val: int = 60,
                         size: tuple[int, int] = (256, 512), seed: int = 0, difficulty: float = 1.0) -> Path:
    """Render the train and val splits into `out_dir` in the folder layout (`folder:<out_dir>` reads it)."""
    out = Path(out_dir)
    for split, n in (("train", num_train), ("val", num_val)):
        ds = SyntheticStreets(None, split, num_train=num_train, num_val=num_val, size=size, seed=seed,
                              difficulty=difficulty, cache=False)
        for i in range(n):
            image, label, name = ds[i]
            write_sample(out, split, name, image, label)
    write_classes_yaml(out, CLASSES, PALETTE)
    atomic_write_json(out / "params.json", ds.params())
    return out


def write_video(path: str | Path, frames: int = 60, size: tuple[int, int] = (512, 1024), seed: int = 0,
                difficulty: float = 1.0, fps: float = 10.0, split: str = "test") -> Path:
    """Write `frames` synthetic scenes of `split` as an mp4 (mp4v) video, for `runtime.infer --source`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write video {path}; check the folder is writable and the suffix is .mp4")
    try:
        for i in range(frames):
            image, _ = render_scene(size, seed, split, i, difficulty)
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from runtime.errors import cli_main

    p = argparse.ArgumentParser(prog="python -m runtime.datasets.synthetic",
                                description="Export the built-in synthetic street scenes as a video or as a dataset "
                                            "in the generic folder layout (read back with --data folder:DIR).")
    p.add_argument("--video", help="write an mp4 of synthetic frames (scenes of the 'test' split) to this path")
    p.add_argument("--frames", type=int, default=60, help="number of video frames (default 60)")
    p.add_argument("--fps", type=float, default=10.0, help="video frame rate (default 10)")
    p.add_argument("--folder", help="write train and val splits in the folder layout to this directory")
    p.add_argument("--num-train", type=int, default=400, help="training images for --folder (default 400)")
    p.add_argument("--num-val", type=int, default=60, help="validation images for --folder (default 60)")
    p.add_argument("--size", default="512x1024", help="image size HxW (default 512x1024)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--difficulty", type=float, default=1.0, help="clutter, small objects, noise and blur (default 1)")

    @cli_main
    def run(args: argparse.Namespace) -> int:
        try:
            h, w = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise UserError(f"--size '{args.size}' is not HxW (e.g. 512x1024)") from None
        if not args.video and not args.folder:
            raise UserError("nothing to do: pass --video out.mp4 and/or --folder DIR")
        if args.video:
            print(f"wrote {write_video(args.video, args.frames, (h, w), args.seed, args.difficulty, args.fps)}")
        if args.folder:
            out = write_folder_dataset(args.folder, args.num_train, args.num_val, (h, w), args.seed, args.difficulty)
            print(f"wrote {out} (read it with --data folder:{out})")
        return 0

    return run(p.parse_args(argv))

