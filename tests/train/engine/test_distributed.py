"""DDP on CPU: two gloo processes train the tiny model; ranks must end identical and agree on stopping."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from engine_standins import ScaledTask, TinyLoader, TinySeg, data_info, make_data, tiny_cfg, val_batches

from train.engine.distributed import cleanup, init_distributed
from train.engine.trainer import Trainer


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = init_distributed("cpu")
    try:
        out = {}
        for name, budget in (("iters", "5"), ("clock", "0.7s")):
            torch.manual_seed(100 + rank)  # different initial weights: DDP must start from rank 0's
            model, objective = TinySeg(), ScaledTask()
            init = objective.extra_head.weight.detach().clone()
            x, y = make_data()
            # wall-clock periods too: every rank must validate at the same iteration (or they deadlock)
            cfg = tiny_cfg(tmp, budget=budget, ckpt_every="2", val_every="3" if name == "iters" else "0.2s")
            cfg.train.name = name
            res = Trainer(cfg, model, objective, TinyLoader(x, y, rank=rank, world=world), val_batches(),
                          data_info(), dist_env=env).fit()
            params = [p.detach().clone() for p in [*model.parameters(), *objective.parameters()]]
            out[name] = {"params": params, "extra_moved": not torch.equal(init, objective.extra_head.weight),
                         "iterations": res["iterations"], "final_miou": res["final_miou"]}
        torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)  # a collective that one rank misses would hang forever
def test_two_gloo_ranks_stay_identical_and_learn(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for name in ("iters", "clock"):
        assert r0[name]["iterations"] == r1[name]["iterations"]  # the clock budget stops both at once
        for p, q in zip(r0[name]["params"], r1[name]["params"]):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
        assert r0[name]["final_miou"] == r1[name]["final_miou"]
    assert r0["iters"]["iterations"] == 5
    clock_vals = [json.loads(ln) for ln in (tmp_path / "clock/log.jsonl").read_text().splitlines()]
    assert sum(ln["kind"] == "val" for ln in clock_vals) >= 2
    assert r0["iters"]["extra_moved"]  # the objective's own parameters are trained (and synced, above)
    lines = [json.loads(ln) for ln in (tmp_path / "iters/log.jsonl").read_text().splitlines()]
    train = [ln for ln in lines if ln["kind"] == "train"]
    assert [ln["iteration"] for ln in train] == [1, 2, 3, 4, 5]  # only rank 0 writes
    assert train[-1]["loss"] < train[0]["loss"]
    ranks = torch.load(tmp_path / "iters/last.pt", weights_only=True)["ranks"]
    assert len(ranks) == 2 and ranks[0]["loader"] == ranks[1]["loader"]
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])  # per-rank RNG kept
