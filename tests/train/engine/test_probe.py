"""The budget probe uses its budget: the probe drains the batches the loader prefetched before timing, and a
probed count is re-resolved once from the training's own speed (train/engine/budget.py `Recheck`), recorded in
probe.json and replayed by a resumed run. Fake clocks throughout: a cold process costs more per step than
a warm one, as data workers start and the allocator warms up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_standins import ScaledTask, TinyLoader, TinySeg, data_info, make_data, tiny_cfg

from train.engine.budget import Recheck, recheck_count, resolve_budget, resolve_iterations
from train.engine.checkpoint import load_training_state
from train.engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_recheck_count_by_hand() -> None:
    assert recheck_count(60.0, 6, 3.0, 0.5) == 6 + 114  # 57 s left at 0.5 s/iter
    assert recheck_count(60.0, 6, 59.9, 0.5) == 6  # no whole step left: stop where it is
    assert recheck_count(60.0, 0, 61.0, 0.5) == 1  # at least one iteration
    assert recheck_count(1.5, 0, 0.0, 0.5) == 3  # no float round-down below an exact multiple
    with pytest.raises(ValueError):
        recheck_count(60.0, 6, 3.0, 0.0)


def record(budget: float = 100.0, probe_s: float = 1.0) -> dict:
    n = resolve_iterations(budget, probe_s)
    return {"method": "kd", "s_per_iter": probe_s, "budget_seconds": budget, "iterations": n, "probe_iterations": n}


def test_recheck_measures_the_second_half_of_its_window_once() -> None:
    rec = record()
    r = Recheck(rec, after=10)
    # iteration i reached at elapsed(i): a 3 s first step (cold), then 0.5 s a step
    elapsed = [0.0] + [3.0 + 0.5 * (i - 1) for i in range(1, 40)]
    seen = [(i, r.observe(i, elapsed[i])) for i in range(0, 15)]
    assert [i for i, n in seen if n is not None] == [10]
    # the window is iterations 5 to 10 (the cold first step left out): 0.5 s/iter, 92.5 s left -> 185 more
    assert dict(seen)[10] == 10 + 185 == rec["iterations"]
    assert rec["probe_iterations"] == 100
    assert rec["recheck"] == {"after": 10, "from_iteration": 5, "iteration": 10, "elapsed_s": 7.5,
                              "s_per_iter": 0.5, "iterations": 195}
    assert "0.500 s/iter over iterations 5-10" in r.describe() and "(the probe's count: 100)" in r.describe()

    # a resumed run replays it: the probed count before iteration 10, the new one from there
    again = Recheck(json.loads(json.dumps(rec)), after=10)
    assert [again.observe(i, 0.0) for i in (3, 9)] == [None, None] and again.observe(10, 0.0) == 195
    assert again.observe(11, 0.0) is None
    past = Recheck(json.loads(json.dumps(rec)), after=10)
    assert past.observe(40, 99.0) == 195 and "as re-resolved" in past.describe()

    # a run resumed before the recheck measures its own process: the window starts where it resumed
    late = Recheck(record(), after=10)
    assert [late.observe(i, 50.0 + 0.25 * (i - 30)) for i in range(30, 40)] == [None] * 10
    assert late.observe(40, 52.5) == 40 + 190  # window 35..40 at 0.25 s/iter, 47.5 s left
    assert Recheck(record(), after=0).observe(100, 50.0) is None  # off


class Clock:
    """A fake clock that the training steps advance: `cold` seconds for each of the first `cold_steps` steps
    of the process (the probe's, here), `warm` seconds after."""

    def __init__(self, cold: float = 2.0, cold_steps: int = 4, warm: float = 0.5) -> None:
        self.t, self.steps, self.cold, self.cold_steps, self.warm = 0.0, 0, cold, cold_steps, warm

    def step(self) -> None:
        self.steps += 1
        self.t += self.cold if self.steps <= self.cold_steps else self.warm

    def __call__(self) -> float:
        return self.t


class ClockedTask(ScaledTask):
    def __init__(self, clock: Clock, crash_at: int | None = None) -> None:
        super().__init__(crash_at=crash_at)
        self.clock = clock

    def forward(self, s, t, labels, step):  # type: ignore[no-untyped-def]
        terms = super().forward(s, t, labels, step)
        self.clock.step()
        return terms


def probed_trainer(tmp_path: Path, clock: Clock, crash_at: int | None = None, **train: object) -> Trainer:
    cfg = tiny_cfg(tmp_path, budget="60s", budget_mode="probe", probe_warmup=1, probe_steps=3,
                   probe_recheck=6, **train)
    torch.manual_seed(0)
    x, y = make_data()
    trainer = Trainer(cfg, TinySeg(), ClockedTask(clock, crash_at), TinyLoader(x, y), None, data_info())
    trainer._timer = clock
    return trainer


def run(trainer: Trainer) -> tuple[dict | None, dict]:
    probe = resolve_budget(trainer.cfg, trainer.probe, trainer.env, trainer.run_dir)
    trainer.follow_probe(probe, trainer.cfg.train.probe_recheck)
    return probe, trainer.fit()


def test_a_cold_probe_is_corrected_by_the_training_speed(tmp_path: Path) -> None:
    clock = Clock()
    trainer = probed_trainer(tmp_path, clock)
    probe, res = run(trainer)
    assert probe is not None and probe["step_seconds"] == [2.0, 2.0, 2.0] and probe["probe_iterations"] == 30
    # training runs at 0.5 s/iter: after 6 iterations (3 s), 57 s are left for 114 more
    assert probe["recheck"]["s_per_iter"] == 0.5 and probe["recheck"]["iteration"] == 6
    assert res["iterations"] == res["resolved_iterations"] == probe["iterations"] == 120
    assert res["elapsed_s"] == pytest.approx(60.0)  # the whole budget is used (the probe alone used 15 s)
    on_disk = json.loads((tmp_path / "tiny" / "probe.json").read_text())
    assert on_disk["iterations"] == 120 and on_disk["probe_iterations"] == 30 and on_disk["recheck"]["iterations"] == 120
    assert "iterations: 120" in (tmp_path / "tiny" / "config.yaml").read_text()


def test_a_resumed_run_replays_the_recheck_and_gives_the_same_losses(tmp_path: Path) -> None:
    full = probed_trainer(tmp_path / "a", Clock())
    run(full)
    cut = probed_trainer(tmp_path / "b", Clock(), crash_at=10, ckpt_every="4")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cut)
    assert load_training_state(tmp_path / "b/tiny/last.pt")["iteration"] == 8  # after the recheck at 6
    resumed = probed_trainer(tmp_path / "b", Clock(cold=100.0))  # a slow restart changes nothing
    probe, res = run(resumed)
    assert probe is not None and probe["iterations"] == 120 and res["iterations"] == 120
    assert res["resumed_from"] == 8

    def lines(folder: Path) -> list[dict]:
        rows = [json.loads(ln) for ln in (folder / "tiny" / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("elapsed", "s_per_iter")} for r in rows if r["kind"] == "train"]

    assert lines(tmp_path / "a") == lines(tmp_path / "b")  # every loss and lr, the schedule switch included


def test_the_probe_drains_the_prefetched_batches_before_timing(tmp_path: Path) -> None:
    x, y = make_data(8)
    cfg = tiny_cfg(tmp_path, budget="30s")
    trainer = Trainer(cfg, TinySeg(), ScaledTask(), TinyLoader(x, y, batch=4), None, data_info())
    assert trainer.prefetched_batches() == 0  # no DataLoader workers behind it
    ticks = iter([0.0, 9.0, 9.0, 12.0, 12.0, 12.5, 20.0, 20.5, 21.0, 21.4, 22.0, 22.6])
    rec = trainer.probe(warmup=1, steps=3, timer=lambda: next(ticks), drain=2)
    assert rec["drain_steps"] == 2 and rec["warmup_steps"] == 1
    assert rec["step_seconds"] == pytest.approx([0.5, 0.4, 0.6])  # the 9 s, 3 s and 0.5 s steps are untimed

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, num_workers=2,
                                         prefetch_factor=3)
    with_workers = Trainer(cfg, TinySeg(), ScaledTask(), loader, None, data_info())
    assert with_workers.prefetched_batches() == 6
