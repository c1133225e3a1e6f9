"""Which dataset a model was trained on, and how to open it again: the one `DataSpec`.

    DataSpec.parse("cityscapes:/data/cityscapes").open("val")
    DataSpec.from_config(cfg["data"])           # a training config's data block (dict)
    DataSpec.for_model(info, "synthetic")       # --data override, the model's recorded generator kept
    info.extra.update(spec.to_extra())          # what training records in every artefact's DataInfo

A spec is a reader name (a key of `dataset_classes()`), a root folder (None for generated data: each
reader says with `needs_root`), and reader options. The only options that travel with a model are the
synthetic generator's parameters (`RECORDED_SYNTHETIC`): they define the scenes, so runtime.eval, export
parity and calibration must regenerate the same ones. Local choices (the scene cache) are not recorded.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runtime.datasets.base import SegmentationDataset
from runtime.errors import UserError
from runtime.metadata import DataInfo

SYNTHETIC = "synthetic"
# The synthetic generator's parameters that define its scenes (recorded in DataInfo.extra["synthetic"]).
RECORDED_SYNTHETIC = ("num_train", "num_val", "size", "seed", "difficulty")


def dataset_classes() -> dict[str, type[SegmentationDataset]]:
    """Name -> reader class (a plain dictionary; imported lazily to keep start-up cheap)."""
    from runtime.datasets.ade20k import ADE20K
    from runtime.datasets.camvid import CamVid
    from runtime.datasets.cityscapes import Cityscapes
    from runtime.datasets.folder import FolderDataset
    from runtime.datasets.synthetic import SyntheticStreets
    from runtime.datasets.voc import PascalVOC

    return {
        SYNTHETIC: SyntheticStreets,
        "cityscapes": Cityscapes,
        "voc": PascalVOC,
        "camvid": CamVid,
        "ade20k": ADE20K,
        "folder": FolderDataset,
    }


def _plain(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class DataSpec:
    """A dataset: reader `name`, `root` folder (None where the reader needs none), reader `options`."""

    name: str = SYNTHETIC
    root: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, options: Mapping[str, Any] | None = None) -> DataSpec:
        """`"name:root"` -> name and root; `"name"` -> no root. Only the first ':' splits, so a Windows
        root (`folder:C:/data`) stays whole."""
        name, sep, root = str(text).partition(":")
        return cls(name.strip().lower(), root if sep and root else None, dict(options or {}))

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> DataSpec:
        """A training config's `data` block (`dataset` as name or name:root, `root`, `synthetic`)."""
        data = data if isinstance(data, Mapping) else {}
        spec = cls.parse(str(data.get("dataset") or SYNTHETIC))
        if spec.root is None and data.get("root"):
            spec = replace(spec, root=str(data["root"]))
        syn = data.get("synthetic")
        if spec.name == SYNTHETIC and isinstance(syn, Mapping):
            spec = replace(spec, options={k: _plain(v) for k, v in syn.items()})
        return spec

    @classmethod
    def recorded(cls, info: DataInfo) -> DataSpec | None:
        """The dataset the model's DataInfo records (`extra["dataset"]`, `extra["synthetic"]`), if any."""
        extra = info.extra or {}
        if not extra.get("dataset") and not isinstance(extra.get(SYNTHETIC), Mapping):
            return None
        return cls.from_config({"dataset": extra.get("dataset") or SYNTHETIC, SYNTHETIC: extra.get(SYNTHETIC)})

    @classmethod
    def for_model(cls, info: DataInfo, override: str | None = None, fallback: DataSpec | None = None) -> DataSpec:
        """The data to score or calibrate a model on: `override` (`--data name:root`) when given, else
        what the model records, else `fallback`, else synthetic. An override naming the recorded
        reader keeps the recorded options (the synthetic generator of the model's own scenes)."""
        return (cls.recorded(info) or fallback or cls()).with_override(override)

    def with_override(self, override: str | None) -> DataSpec:
        """`override` (`name:root`) in place of this spec; naming the same reader keeps this spec's options."""
        if override is None:
            return self
        spec = DataSpec.parse(override)
        return replace(spec, options=dict(self.options)) if spec.name == self.name else spec

    @property
    def text(self) -> str:
        """`name:root`, or `name` when there is no root: the form `--data` takes."""
        return f"{self.name}:{self.root}" if self.root else self.name

    def __str__(self) -> str:
        return self.text

    def reader_class(self) -> type[SegmentationDataset]:
        classes = dataset_classes()
        if self.name not in classes:
            close = difflib.get_close_matches(self.name, classes, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown dataset '{self.name}'; choose one of {', '.join(classes)} as name:root.{hint}")
        return classes[self.name]

    def to_extra(self) -> dict[str, Any]:
        """What `DataInfo.extra` records: the spec text and, for synthetic data, its scene parameters."""
        extra: dict[str, Any] = {"dataset": self.text}
        if self.name == SYNTHETIC:
            extra[SYNTHETIC] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options.items()
                                if k in RECORDED_SYNTHETIC}
        return extra

    def open(self, split: str = "train", skip_bad: bool = False, skip_option: str | None = None,
             **overrides: Any) -> SegmentationDataset:
        """The reader for `split`. The spec's options that the reader does not take are left out (a model
        recorded by another version may carry more); `overrides` replace them and are passed as given.
        `skip_option` is how the opening command skips corrupt samples, as its user types it (`--skip-bad`,
        `data.skip_bad=true`), which a corrupt sample's sentence names; None where the command cannot."""
        cls = self.reader_class()
        if cls.needs_root and self.root is None:
            raise UserError(f"dataset '{self.name}' needs a root folder: --data {self.name}:/path/to/{self.name}")
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        opts = {k: _plain(v) for k, v in self.options.items()
                if (takes_any or k in params) and k not in ("root", "split", "skip_bad")}
        reader = cls(self.root, split=split, skip_bad=skip_bad, **{**opts, **overrides})
        reader.skip_option = skip_option
        return reader
