from __future__ import annotations

import json

import numpy as np
import pytest

import runtime.bench as bench
from runtime.report import format_table, latency_summary


def test_bench_table_json_markdown(onnx_model, tmp_path, capsys):
    good = onnx_model("s.onnx", classes="synthetic", size=(32, 64), extra={"synthetic": {"size": [32, 64], "num_val": 2, "cache": False}})
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:50])
    out = tmp_path / "bench"
    rc = bench.main(["--models", str(good), str(cut), str(tmp_path / "absent.engine"), "--warmup", "1", "--iters", "3",
                     "--data", "synthetic", "--threads", "1", "--out", str(out)])
    assert rc == 1  # some rows failed: the table is still written, the exit code says so
    report = json.loads((out / "bench.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    ok = rows["s.onnx"]
    assert ok["status"] == "ok" and ok["format"] == "onnx" and ok["iters"] == 3 and ok["images"] == 2
    assert ok["p50_ms"] <= ok["p90_ms"] <= ok["p99_ms"] and ok["fps"] > 0 and 0 <= ok["miou"] <= 100
    assert ok["size_mb"] == pytest.approx(good.stat().st_size / 1e6)
    assert rows["cut.onnx"]["status"].startswith("error: ") and "cut.onnx" in rows["cut.onnx"]["status"]
    assert rows["absent.engine"]["status"].startswith("error: ")
    assert set(bench.COLUMNS) <= set(ok) and report["columns"] == bench.COLUMNS and "environment" in report
    md = (out / "bench.md").read_text().splitlines()
    assert md[0].startswith("| model | format | output | status") and len(md) == 5
    captured = capsys.readouterr()
    assert "s.onnx" in captured.out and ("bench.png" in captured.out or "no plot" in captured.out)
    assert "2 of 3 models failed (cut.onnx, absent.engine)" in captured.err
    assert bench.main(["--models", str(good), "--warmup", "1", "--iters", "2", "--out", str(out)]) == 0


def test_latency_summary_and_tables():
    ms = np.arange(1, 101, dtype=float)
    s = latency_summary(ms, batch=2)
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01) and s["fps"] == pytest.approx(2000 / 50.5)
    rows = [{"a": "x", "b": 1.234}, {"a": "yy", "b": None}]
    assert format_table(rows, ["a", "b"], markdown=True).splitlines()[2] == "| x | 1.23 |"
    assert format_table(rows, ["a", "b"]).splitlines()[3].endswith("-")


def test_a_static_model_given_another_size_and_the_note_of_a_run_with_data(onnx_model, tmp_path, capsys):
    """A static model given --size is told to drop it (not to "resize with runtime.preprocess"); with --data
    given, no plot is not blamed on a missing --data."""
    model = onnx_model("s.onnx", classes="synthetic", size=(32, 64))
    out = tmp_path / "bench"
    assert bench.main(["--models", str(model), "--size", "16x32", "--warmup", "1", "--iters", "2",
                       "--data", "synthetic", "--out", str(out)]) == 1
    row = json.loads((out / "bench.json").read_text())["rows"][0]
    assert row["status"] == ("error: s.onnx has a static 32x64 input and runs only at that size; drop --size 16x32 "
                             "(or export the model with --dynamic)")
    printed = capsys.readouterr().out
    assert "no plot: nothing was both timed and scored (see the status column)" in printed
    assert "pass --data" not in printed
    assert bench.main(["--models", str(model), "--warmup", "1", "--iters", "2", "--out", str(out)]) == 0
    assert "no plot: pass --data to score mIoU" in capsys.readouterr().out
