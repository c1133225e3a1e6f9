"""DataSpec: the one way to say which dataset a model was trained on and to open it again."""

from __future__ import annotations

import pytest

from runtime.datasets import DataSpec
from runtime.errors import UserError
from runtime.metadata import DataInfo

SYN = {"num_train": 4, "num_val": 3, "size": [32, 64], "seed": 5, "difficulty": 1.0}


def test_parse_keeps_a_windows_root_whole():
    assert DataSpec.parse("Folder:C:/data/x") == DataSpec("folder", "C:/data/x", {})
    assert DataSpec.parse("synthetic") == DataSpec("synthetic", None, {})
    assert DataSpec.parse("cityscapes:/d").text == "cityscapes:/d"


def test_config_round_trips_through_data_info_without_local_choices():
    spec = DataSpec.from_config({"dataset": "synthetic", "synthetic": {**SYN, "cache": False}})
    assert spec.options["cache"] is False and spec.options["size"] == (32, 64)
    extra = spec.to_extra()
    assert extra == {"dataset": "synthetic", "synthetic": SYN}  # the scene cache is a local choice
    again = DataSpec.recorded(DataInfo(classes=["a"], palette=[(0, 0, 0)], extra=extra))
    assert again is not None and again.to_extra() == extra
    assert DataSpec.from_config({"dataset": "voc", "root": "/v"}).text == "voc:/v"


def test_an_override_of_the_same_reader_keeps_the_recorded_generator():
    info = DataInfo(classes=["a"], palette=[(0, 0, 0)], extra={"dataset": "synthetic", "synthetic": SYN})
    assert DataSpec.for_model(info, "synthetic").options["seed"] == 5
    assert DataSpec.for_model(info, "folder:/f") == DataSpec("folder", "/f", {})
    bare = DataInfo(classes=["a"], palette=[(0, 0, 0)])
    assert DataSpec.recorded(bare) is None and DataSpec.for_model(bare) == DataSpec()


def test_open_checks_the_root_and_the_name():
    with pytest.raises(UserError, match="dataset 'cityscapes' needs a root folder"):
        DataSpec.parse("cityscapes").open("val")
    with pytest.raises(UserError, match="unknown dataset 'cityscape'.*Did you mean 'cityscapes'"):
        DataSpec.parse("cityscape:/x").open("val")
    ds = DataSpec.from_config({"dataset": "synthetic", "synthetic": {**SYN, "cache": False, "later": 1}}).open("val")
    assert len(ds) == 3 and ds.size == (32, 64) and ds.seed == 5  # an option the reader lacks is left out
