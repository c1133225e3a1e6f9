"""train.check --speed at tiny sizes on this CPU: every training row finite, the gloo process group works,
CUDA reported missing where there is no GPU; no ONNX or TensorRT row (those are export.check's:
tests/export/test_check.py)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_speed_check_runs_its_cpu_path(tmp_path):
    pytest.importorskip("train.data")
    import torch

    from train.check import main

    js = tmp_path / "t.json"
    rc = main(["--speed", "--size", "32x64", "--steps", "3", "--batch", "2", "--device", "cpu", "--json", str(js)])
    rows = json.loads(js.read_text())["rows"]
    by = {(r["area"], r["item"]): r for r in rows}
    assert rc == (1 if any(r["status"] == "fail" for r in rows) else 0)
    train = [r for r in rows if r["area"] == "self-test"]
    assert len(train) == 11  # the teacher, then 2 recipes x (alone, KD, LFD, KD and LFD from the cache)
    assert all(r["status"] in ("ok", "warn") and r["s_per_iter"] > 0 and r["peak_mb"] > 0 for r in train)
    assert sum("teacher cache" in r["note"] for r in train) == 4
    assert by[("ddp", "gloo process group")]["status"] == "ok"
    assert not {"export", "tensorrt"} & {r["area"] for r in rows}
    if not torch.cuda.is_available():
        assert ("cuda", "CUDA") in by and by[("cuda", "CUDA")]["status"] == "missing"
