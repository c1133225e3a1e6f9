"""train.compare.sweep (train.compare --budgets): budgets parsed, the verdict and crossings on hand-worked numbers,
and a two-budget FLOP-matched sweep end to end on tiny synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_distill import tiny_config
from test_fkd_layers import save_teacher

from runtime.errors import UserError
from train.compare.run import main
from train.compare.sweep import crossings, parse_budgets, pooled_std, sweep_markdown, sweep_rows


def report(budget: str, rows: dict[str, list[float]], teacher: float = 0.5) -> dict:
    def row(m: str, v: list[float]) -> dict:
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        return {"method": m, "miou_mean": mean, "miou_std": std, "miou_per_seed": v, "iterations": 10}
    return {"budget": budget, "match": "probe", "teacher": {"miou": teacher}, "failed": [],
            "methods": [row(m, v) for m, v in rows.items()]}


def test_parse_budgets() -> None:
    assert parse_budgets("1m, 2m,4m") == ["1m", "2m", "4m"]
    for bad, why in (("1m", "at least two"), ("1m,100", "mixes"), ("2m,1m", "increase"), ("1m,1m", "increase")):
        with pytest.raises(UserError, match=why):
            parse_budgets(bad)


def test_verdict_and_crossing_by_hand() -> None:
    """kd: Δ = −2 points at 60 s, +2 at 120 s (crossing at 90 s by linear interpolation), +6 at 240 s;
    seeds ±1 point around each mean, so s_p = 1.414 points: beats only where Δ > 2.83 points."""
    reps = {"1m": report("60s", {"baseline": [0.19, 0.21], "kd": [0.17, 0.19]}),
            "2m": report("120s", {"baseline": [0.24, 0.26], "kd": [0.26, 0.28]}),
            "4m": report("240s", {"baseline": [0.28, 0.30], "kd": [0.34, 0.36]})}
    rows = sweep_rows(reps)
    kd = {r["compute"]: r for r in rows if r["method"] == "kd"}
    assert kd[60.0]["delta"] == pytest.approx(-0.02) and kd[120.0]["delta"] == pytest.approx(0.02)
    assert kd[60.0]["pooled_std"] == pytest.approx(pooled_std(math.sqrt(2e-4), math.sqrt(2e-4)))
    assert [kd[c]["beats"] for c in (60.0, 120.0, 240.0)] == [False, False, True]
    assert crossings(rows) == {"kd": [{"compute": pytest.approx(90.0), "up": True}]}
    md = sweep_markdown(rows, "seconds", 2)
    assert "kd: rises above the baseline at 90 (seconds)" in md and "+6.00 ✓" in md and "-2.00)" in md
    # and back: +2 at 120 s, -2 at 240 s falls below at 180 s
    reps["4m"] = report("240s", {"baseline": [0.28, 0.30], "kd": [0.26, 0.28]})
    assert crossings(sweep_rows(reps))["kd"][1] == {"compute": pytest.approx(180.0), "up": False}
    one = sweep_rows({"1m": report("60s", {"baseline": [0.2], "kd": [0.3]})})
    assert [r["beats"] for r in one] == [None, None]  # one seed: no noise estimate, no verdict


def test_flops_sweep_end_to_end(tmp_path: Path) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "sweep"
    assert main(["--config", str(tiny_config(tmp_path)), "--methods", "baseline,kd", "--budgets", "1,2",
                 "--match", "flops", "--teacher", str(teacher), "--charge", "amortised", "--out", str(out)]) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert result["unit"] == "TFLOP, counted" and result["failed"] == []
    # one cost measurement: the second budget reused the first's FLOP counts
    assert (out / "budget-1" / "flops.json").read_bytes() == (out / "budget-2" / "flops.json").read_bytes()
    f = json.loads((out / "budget-1" / "flops.json").read_text())["baseline"]["step_flops"]
    computes = sorted({r["compute"] for r in result["rows"]})
    assert computes == [pytest.approx(f / 1e12), pytest.approx(2 * f / 1e12)]
    for b in ("1", "2"):
        rep = json.loads((out / f"budget-{b}" / "compare.json").read_text())
        assert rep["teacher_cache"]["path"] == json.loads((out / "budget-1" / "compare.json").read_text())[
            "teacher_cache"]["path"]
    assert (out / "sweep.png").stat().st_size > 0 and "| budget |" in (out / "sweep.md").read_text()
    assert main(["--methods", "baseline", "--budget", "1", "--budgets", "1,2"]) == 2  # one or the other
