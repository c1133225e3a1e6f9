"""train/engine/budget.py and the probe: a wall-clock budget becomes an iteration count from the median of a
few timed steps (a fake timer here), the probe leaves the run as it found it, a probe-resolved run trains
exactly that count and records it, a resume reuses it; and seeds hold: the same command gives the same
losses, and every method starts from the same student weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_standins import TinyLoader, TinySeg, data_info, make_data
from test_distill import tiny_config
from test_fkd_layers import save_teacher

from train.config import Config
from train.distill import main as distill_main
from train.engine.budget import charge_cache, probe_record, resolve_iterations
from train.engine.checkpoint import load_checkpoint
from train.engine.trainer import Trainer
from train.losses import TaskLoss


def test_resolve_iterations() -> None:
    assert resolve_iterations(60.0, 0.5) == 120
    assert resolve_iterations(60.0, 0.7) == 85  # floor
    assert resolve_iterations(0.3, 0.5) == 1  # at least one iteration
    assert resolve_iterations(1.5, 0.5) == 3  # no float round-down below an exact multiple
    with pytest.raises(ValueError):
        resolve_iterations(60.0, 0.0)
    assert charge_cache(60.0, 12.0, 4) == 57.0 and charge_cache(60.0, 12.0, 1) == 48.0


def test_probe_median_with_a_fake_timer_and_state_restored(tmp_path: Path) -> None:
    cfg = Config()
    cfg.train.device, cfg.train.amp, cfg.train.budget = "cpu", False, "30s"
    x, y = make_data(8)
    torch.manual_seed(0)
    model = TinySeg()
    trainer = Trainer(cfg, model, TaskLoss(), TinyLoader(x, y, batch=4), None, data_info(), run_dir=tmp_path / "r")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader_before = trainer.loader.state_dict()
    rng_before = torch.get_rng_state()
    ticks = iter([0.0, 9.0,  # warm-up steps are not counted
                  10.0, 10.5, 11.0, 11.2, 12.0, 12.9, 13.0, 13.4, 14.0, 14.6])
    record = trainer.probe(warmup=1, steps=5, timer=lambda: next(ticks))
    assert record["step_seconds"] == pytest.approx([0.5, 0.2, 0.9, 0.4, 0.6])
    assert record["s_per_iter"] == pytest.approx(0.5) and record["timed_steps"] == 5
    assert resolve_iterations(30.0, record["s_per_iter"]) == 60
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the probe's steps are undone
    assert trainer.loader.state_dict() == loader_before and torch.equal(torch.get_rng_state(), rng_before)
    assert trainer.optimizer.state_dict()["state"] == {}
    assert not (tmp_path / "r").exists()  # nothing written


def test_probe_record_rejects_no_steps() -> None:
    with pytest.raises(ValueError):
        probe_record([], 1, "kd", {})


def losses(run: Path) -> list[dict]:
    keep = ("iteration", "loss", "ce", "aux_ce", "kd", "task", "fea", "aux", "shared_H", "shared", "kl")
    return [{k: v for k, v in json.loads(line).items() if k in keep}
            for line in (run / "log.jsonl").read_text().splitlines() if json.loads(line)["kind"] == "train"]


@pytest.mark.parametrize("method", ["baseline", "kd", "lfd"])
def test_the_same_command_gives_the_same_losses(tmp_path: Path, method: str) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    args = ["--config", str(tiny_config(tmp_path)), f"method={method}", f"teacher={teacher}", "budget=3"]
    torch.manual_seed(123)  # whatever the global RNG held before, the runs must agree
    assert distill_main([*args, "name=a"]) == 0
    torch.manual_seed(456)
    assert distill_main([*args, "name=b"]) == 0
    a, b = losses(tmp_path / "runs" / "a"), losses(tmp_path / "runs" / "b")
    assert len(a) == 3 and a == b


# One step so small that the weights move by ~1e-30 at most (budget=0 is refused: it trains nothing); the
# BatchNorm statistics see that step's batch, the same for every method (same seed, same data order).
NO_CHANGE = ("budget=1", "optim.lr=1e-30")


def test_every_method_starts_from_the_same_student(tmp_path: Path) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    weights = {}
    for method in ("baseline", "kd", "lfd", "fkd"):
        torch.manual_seed(hash(method) % 1000)
        assert distill_main(["--config", str(tiny_config(tmp_path)), f"method={method}", f"teacher={teacher}",
                             *NO_CHANGE, f"name={method}"]) == 0  # final.pt holds the initial weights
        weights[method] = load_checkpoint(tmp_path / "runs" / method / "final.pt")["model"]
    for method in ("kd", "lfd", "fkd"):
        for k, v in weights["baseline"].items():
            assert torch.allclose(weights[method][k], v, rtol=0, atol=1e-20), (method, k)
    other = tmp_path / "runs" / "seed1"
    assert distill_main(["--config", str(tiny_config(tmp_path)), *NO_CHANGE, "seed=1", "name=seed1"]) == 0
    assert not all(torch.allclose(load_checkpoint(other / "final.pt")["model"][k], v, rtol=0, atol=1e-20)
                   for k, v in weights["baseline"].items())


def test_probe_resolved_run_trains_the_count_and_resume_keeps_it(tmp_path: Path) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    args = ["--config", str(tiny_config(tmp_path)), "method=kd", f"teacher={teacher}", "budget=3s",
            "train.budget_mode=probe", "train.probe_steps=2", "train.probe_warmup=1", "name=p"]
    assert distill_main(args) == 0
    run = tmp_path / "runs" / "p"
    probe = json.loads((run / "probe.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert probe["probe_iterations"] == resolve_iterations(3.0, probe["s_per_iter"])
    # the count trained: the probe's, or the one re-resolved from the training speed (test_probe.py)
    assert results["iterations"] == results["resolved_iterations"] == probe["iterations"]
    assert probe["iterations"] == (probe["recheck"]["iterations"] if "recheck" in probe else probe["probe_iterations"])
    assert results["budget"] == "3s" and results["probe"]["s_per_iter"] == probe["s_per_iter"]
    # a replay with the count given trains exactly that count, with no probe
    assert distill_main([*args[:-1], "name=q", "train.iterations=4"]) == 0
    replay = json.loads((tmp_path / "runs" / "q" / "results.json").read_text())
    assert replay["iterations"] == 4 and replay["probe"] is None and not (tmp_path / "runs" / "q" / "probe.json").exists()


def test_probe_only_writes_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "probe.json"
    assert distill_main(["--config", str(tiny_config(tmp_path)), "method=lfd", f"teacher={teacher}",
                         "train.probe_steps=2", "train.probe_warmup=1", "--probe-only", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["method"] == "lfd" and len(record["step_seconds"]) == 2 and record["s_per_iter"] > 0
    assert record["env"]["threads"] >= 1 and "s/iter" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # a probe trains nothing and writes no run folder


def test_mean_interval_by_hand() -> None:
    from train.engine.budget import mean_interval

    mean, lo, hi = mean_interval([1.0, 1.2, 1.1])  # s = 0.1, t_{0.975,2} = 4.303, half = 4.303 * 0.1 / sqrt(3)
    assert mean == pytest.approx(1.1) and hi - mean == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    assert lo == pytest.approx(2 * mean - hi)
    assert mean_interval([2.0])[1] == float("-inf")


def test_interleaved_costs_rotate_and_stop_when_the_ratio_is_known() -> None:
    """Steps whose time drifts with a slow spell of the machine: interleaving cancels the drift; the
    rounds stop once every ratio's 95 % interval is within the tolerance."""
    from train.engine.budget import interleaved_costs

    true = {"baseline": 0.30, "kd": 0.33, "lfd": 0.36}
    clock = {"t": 0.0, "n": 0}
    order: list[str] = []

    def step(m: str) -> float:
        clock["n"] += 1
        load = 1.0 + 0.5 * ((clock["n"] // 40) % 2)  # the machine is 50 % slower every other 40 steps
        jitter = 1.0 + 0.02 * ((clock["n"] * 7919) % 5 - 2) / 2  # ±2 %, deterministic
        t = true[m] * load * jitter
        clock["t"] += t
        order.append(m)
        return t

    costs = interleaved_costs(step, list(true), "baseline", warmup=1, per_round=2, min_rounds=4,
                              max_rounds=200, tolerance=0.03, max_seconds=1e9, clock=lambda: clock["t"])
    assert order[:3] == ["baseline", "kd", "lfd"]  # warm-up
    assert order[3:5] == ["baseline"] * 2 and order[9:11] == ["kd"] * 2  # round 2 starts with kd
    for m, c in costs.items():
        assert c["converged"] and c["ratio_high"] - c["ratio"] <= 0.03 * c["ratio"]
        assert c["ratio"] == pytest.approx(true[m] / true["baseline"], rel=0.02)
        assert c["ratio_low"] <= true[m] / true["baseline"] <= c["ratio_high"] or m == "baseline"
    assert costs["baseline"]["ratio"] == 1.0
    # a time cap ends the rounds unconverged, and the interval still says how well the ratio is known
    capped = interleaved_costs(step, list(true), "baseline", warmup=0, min_rounds=2, max_rounds=200,
                               tolerance=1e-6, max_seconds=5.0, clock=lambda: clock["t"])
    assert not capped["kd"]["converged"] and capped["kd"]["rounds"] < 200
    # drain: untimed steps at the start of each turn (what the loader prefetched meanwhile)
    order.clear()
    drained = interleaved_costs(step, list(true), "baseline", warmup=0, min_rounds=1, max_rounds=1, per_round=2,
                                drain=3, clock=lambda: clock["t"])
    assert order == ["baseline"] * 5 + ["kd"] * 5 + ["lfd"] * 5 and len(drained["kd"]["step_seconds"]) == 2
