"""Config values are checked when the config is resolved: one sentence naming the key, value and range."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import UserError
from train.config import RANGES, Config, load_config, validate


@pytest.mark.parametrize("override, message", [
    ("batch=0", "data.batch_size=0 is out of range: it must be at least 1"),
    ("batch=-2", "data.batch_size=-2 is out of range: it must be at least 1"),
    ("data.val_batch_size=0", "data.val_batch_size=0 is out of range"),
    ("lr=-1", "optim.lr=-1.0 is out of range: it must be above 0"),
    ("optim.momentum=-1", "optim.momentum=-1.0 is out of range: it must be from 0 to 1"),
    ("data.workers=-1", "data.workers=-1 is out of range: it must be at least 0"),
    ("train.threads=-1", "train.threads=-1 is out of range: it must be at least 1"),
    ("data.std=[0,0,0]", "data.std=[0.0, 0.0, 0.0] is out of range: each value must be above 0"),
    ("data.scale_range=[2,0.5]", "the first value (smallest scale) must not exceed the second"),
    ("budget=0", "train.budget=0 trains nothing"),
    ("budget=0s", "train.budget=0s trains nothing"),
    ("optim.lr=nan", "optim.lr=nan is out of range"),
    ("budgte=5", "Did you mean 'budget' (train.budget)?"),
    ("data.batchsize=4", "Did you mean 'data.batch_size'?"),
    ("val_every=42", "Did you mean 'train.val_every'?"),
])
def test_out_of_range_values_and_typos_are_one_sentence(override, message):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_defaults_and_recipes_are_in_range():
    validate(Config())
    recipes = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(recipes) >= 5
    for path in recipes:
        load_config(path)


def test_every_range_names_a_real_key():
    cfg = Config()
    for key in RANGES:
        obj = cfg
        for part in key.split("."):
            assert hasattr(obj, part), key
            obj = getattr(obj, part)


@pytest.mark.parametrize("override, message", [
    ("distill.lfd.mask=kll", "distill.lfd.mask 'kll' is not one of kl, entropy, uniform"),
    ("distill.lfd.aux_target=both", "distill.lfd.aux_target 'both' is not one of student, teacher"),
    ("distill.lfd.normalize=[task,ce]", "distill.lfd.normalize 'ce' is not one of task, fea, kd, kl"),
    ("optim.name=adam", "optim.name 'adam' is not one of sgd, adamw"),
    ("train.budget_mode=live", "train.budget_mode 'live' is not one of wallclock, probe"),
    ("train.amp_dtype=fp8", "train.amp_dtype 'fp8' is not one of auto, bf16, fp16"),
])
def test_choices_are_checked_once_from_the_literal_types(override, message):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    assert message in str(e.value)
    cfg = Config()  # a config built in Python is checked by the same rule
    cfg.distill.lfd.mask = "kll"  # type: ignore[assignment]
    with pytest.raises(UserError, match="distill.lfd.mask 'kll' is not one of"):
        validate(cfg)
