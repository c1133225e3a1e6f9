"""scripts/footage_curve.py: the footage-size curve from train.compare folders (seed-paired gains)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from runtime.errors import UserError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "footage_curve.py"


def load():
    spec = importlib.util.spec_from_file_location("footage_curve", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def compare_json(folder: Path, runs: dict[str, dict[int, float]], teacher: float = 0.3) -> Path:
    folder.mkdir(parents=True)
    report = {"teacher": {"miou": teacher},
              "runs": {m: [{"seed": s, "final_miou": v, "iterations": 10} for s, v in seeds.items()]
                       for m, seeds in runs.items()}}
    (folder / "compare.json").write_text(json.dumps(report))
    return folder


def test_gains_are_seed_paired_and_the_plot_is_written(tmp_path: Path) -> None:
    fc = load()
    f0 = compare_json(tmp_path / "f0", {"baseline": {0: 0.10, 1: 0.12}, "kd": {0: 0.09, 1: 0.12}})
    f5 = compare_json(tmp_path / "f5", {"baseline": {0: 0.10, 1: 0.12}, "kd": {0: 0.11, 1: 0.15}})
    out = tmp_path / "curve"
    assert fc.main(["--point", f"0={f0}", "--point", f"500={f5}", "--out", str(out)]) == 0
    rows = json.loads((out / "footage-curve.json").read_text())["rows"]
    kd500 = next(r for r in rows if r["method"] == "kd" and r["frames"] == 500)
    # gains per seed: +1 and +3 points -> mean 2, std sqrt(2) (an unpaired difference of means would agree
    # on the mean but not on the spread: std(kd) = 2.83, std(baseline) = 1.41)
    assert kd500["gain"] == pytest.approx(2.0)
    assert kd500["gain_std"] == pytest.approx(math.sqrt(2.0))
    kd0 = next(r for r in rows if r["method"] == "kd" and r["frames"] == 0)
    assert kd0["gain"] == pytest.approx(-0.5)
    assert [r["frames"] for r in rows] == [0, 0, 500, 500]
    pytest.importorskip("matplotlib")
    assert (out / "footage-curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_compare_json_is_named(tmp_path: Path) -> None:
    fc = load()
    with pytest.raises(UserError, match="compare.json does not exist"):
        fc.main.__wrapped__(["--point", f"0={tmp_path}", "--out", str(tmp_path / "o")])  # cli_main's inner function
