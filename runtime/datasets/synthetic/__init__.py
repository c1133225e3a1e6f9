"""The built-in synthetic street scenes: the default dataset, so that everything runs with no download.

    dataset.py   SyntheticStreets (the reader: cache, splits, DataInfo), the folder and video writers, the CLI
    scene.py     render_scene(size, seed, split, index, difficulty) -> (RGB image, label map)
    layout.py    Street / Side: the street's layout in metres, which every object is placed along
    objects.py   roadside furniture, traffic and people
    draw.py      classes and palette, the projecting Canvas that paints image and label together, colours

`python -m runtime.datasets.synthetic --help` writes a folder dataset or a video of scenes.
"""

from __future__ import annotations

from runtime.datasets.synthetic.dataset import (
    SyntheticStreets,
    default_cache_dir,
    main,
    writable_cache_dir,
    write_folder_dataset,
    write_video,
)
from runtime.datasets.synthetic.draw import CLASSES, GENERATOR_VERSION, PALETTE, SPLIT_CODES
from runtime.datasets.synthetic.scene import render_scene

__all__ = ["CLASSES", "GENERATOR_VERSION", "PALETTE", "SPLIT_CODES", "SyntheticStreets", "default_cache_dir", "main",
           "render_scene", "writable_cache_dir", "write_folder_dataset", "write_video"]
