"""The README's commands exist: every `python -m pkg.module` it shows answers `--help`, and every
make target it names is defined in the Makefile (after Polygraphy, which runs its READMEs' examples)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MODULES = sorted(set(re.findall(r"python -m ((?:runtime|train|export|calib)(?:\.\w+)+)", README)))
TARGETS = sorted(set(re.findall(r"`make ([a-z-]+)`", README)))


def test_readme_names_commands():
    assert len(MODULES) >= 12 and "runtime.infer" in MODULES and "train.distill" in MODULES
    assert {"demo", "test"} <= set(TARGETS)


@pytest.mark.parametrize("module", MODULES)
def test_readme_module_answers_help(module, capsys):
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_readme_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    defined = set(re.findall(r"^([a-z-]+):", makefile, re.MULTILINE))
    assert set(TARGETS) <= defined, f"README names undefined make targets: {set(TARGETS) - defined}"
