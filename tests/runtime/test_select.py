"""runtime.select: the choice on fake timings and scores (hand-checked), the candidate list, and the
command end to end on tiny real models."""

from __future__ import annotations

import json

import pytest

import runtime.select as sel
from runtime.cli import parse_ms
from runtime.errors import UserError


def _row(path, backend, precision, p50, miou, status="ok"):
    return {"model": path.rsplit("/", 1)[-1], "path": path, "backend": backend, "precision": precision,
            "input": "192x384", "status": status, "p50_ms": p50, "miou": miou}


def _rows():
    # s: FP32 58.0 at 20/28 ms, INT8 57.0 at 31 ms, bf16 57.9 at 12 ms; big: 64.0 at 90 ms; r: broken
    return [_row("a/s.onnx", "onnxruntime", "fp32", 20.0, 58.0),
            _row("a/s.openvino.xml", "openvino", "f32", 28.0, 58.0),
            _row("a/s.openvino.xml", "openvino", "bf16", 12.0, 57.9),
            _row("a/s.int8.cpu.onnx", "onnxruntime", "int8", 31.0, 57.0),
            _row("a/big.onnx", "onnxruntime", "fp32", 90.0, 64.0),
            _row("a/r.engine", "tensorrt", "fp16", None, None, status="error: no GPU")]


def test_most_accurate_within_the_budget_and_the_front():
    rows = _rows()
    s = sel.choose(rows, 30.0)
    assert s.choice == 0  # s.onnx on ORT: 58.0 beats bf16's 57.9; big is over budget
    assert s.front == [2, 0, 4]  # bf16 (fastest), ORT fp32, big (most accurate); OV f32 and INT8 are dominated
    assert [r["front"] for r in rows] == [True, False, True, False, True, False]
    assert [r["fits"] for r in rows] == [True, True, True, False, False, False]
    assert s.fastest == 2 and "s.onnx on onnxruntime (fp32, 192x384)" in s.message
    assert sel.choose(_rows(), 100.0).choice == 4  # a generous budget buys the big model
    assert sel.choose(_rows(), 15.0).choice == 2  # a tight one the bf16 path
    tie = [_row("a/x.onnx", "onnxruntime", "fp32", 10.0, 50.0), _row("a/x.onnx", "openvino", "f32", 8.0, 50.0)]
    assert sel.choose(tie, 30.0).choice == 1  # equal mIoU: the faster
    close = [_row("a/x.onnx", "onnxruntime", "fp32", 9.0, 50.0), _row("a/x.onnx", "openvino", "bf16", 10.0, 50.01)]
    assert sel.choose(close, 30.0).choice == 0  # 0.01 points is a tie (default 0.05): the faster
    assert sel.choose(close, 30.0, tolerance=0.0).choice == 1
    assert sel.choose(_rows(), 30.0, tolerance=0.2).choice == 2  # bf16's 0.1-point loss forgiven


def test_nothing_fits_names_the_fastest_and_its_latency():
    rows = _rows()
    s = sel.choose(rows, 5.0)
    assert s.choice is None and s.fastest == 2
    assert s.message == ("nothing fits the 5 ms budget: the fastest option is s.openvino.xml on openvino "
                         "(bf16, 192x384) at 12.00 ms p50 (mIoU 57.90 %)")
    none = sel.choose([_row("a/r.engine", "tensorrt", "fp16", None, None, status="error: no GPU")], 30.0)
    assert none.choice is None and none.fastest is None and "no candidate could be measured" in none.message


def test_max_drop_is_against_the_fp32_run_of_the_same_model():
    rows = _rows()
    s = sel.choose(rows, 15.0, max_drop=0.05)  # bf16 loses 0.1 points against s's best float run (58.0)
    assert rows[2]["drop"] == pytest.approx(0.1) and rows[3]["drop"] == pytest.approx(1.0)
    assert rows[4]["drop"] == 0.0 and rows[5]["drop"] is None
    assert s.choice is None and "loses more than 0.05 mIoU points" in s.message
    assert sel.choose(_rows(), 15.0, max_drop=0.2).choice == 2


def test_candidates_per_file_kind():
    c = sel.candidates(["m/s.onnx", "m/s.int8.openvino.xml", "m/s.engine", "m/s.pt"], ["cpu"],
                       ["onnxruntime", "openvino", "tensorrt", "torch"])
    got = [(x.path.split("/")[-1], x.backend, x.precision, x.options.get("providers") or x.options.get("device"))
           for x in c]
    assert got == [("s.onnx", "onnxruntime", "fp32", "cpu"), ("s.onnx", "openvino", "fp32", "CPU"),
                   ("s.onnx", "openvino", "bf16", "CPU"), ("s.int8.openvino.xml", "openvino", "int8", "CPU"),
                   ("s.int8.openvino.xml", "openvino", "int8+bf16", "CPU"), ("s.engine", "tensorrt", "?", None),
                   ("s.pt", "torch", "fp32", "cpu")]
    gpu = sel.candidates(["m/s.fp16.onnx"], ["gpu"], ["onnxruntime"])  # no OpenVINO installed
    assert [(x.backend, x.precision, x.options) for x in gpu] == [("onnxruntime", "fp16", {"providers": "cuda,cpu"})]
    assert [sel.source_key(p) for p in ("s.onnx", "s.int8.cpu.onnx", "s.int8.openvino.xml", "s.openvino.xml",
                                        "s.fp16.onnx", "s.int8.trt.onnx", "s.int8.engine")] == ["s"] * 7


def test_parse_ms():
    assert parse_ms("30ms") == 30.0 and parse_ms("30") == 30.0 and parse_ms(" 2.5 ms") == 2.5
    assert parse_ms("0.03s") == pytest.approx(30.0)
    for bad in ("fast", "0ms", "-3ms", "30us"):
        with pytest.raises(UserError, match="--latency-budget"):
            parse_ms(bad)


def test_command_end_to_end(onnx_model, tmp_path, capsys):
    extra = {"synthetic": {"size": [32, 64], "num_val": 2, "cache": False}}
    fixed = onnx_model("s.onnx", classes="synthetic", size=(32, 64), extra=extra)
    dyn = onnx_model("d.onnx", classes="synthetic", size=(32, 64), extra=extra, dynamic=True, seed=1)
    out = tmp_path / "sel"
    args = ["--models", str(fixed), str(dyn), "--data", "synthetic", "--warmup", "1", "--iters", "3",
            "--threads", "1", "--sizes", "32x64", "16x32", "--out", str(out)]
    assert sel.main(args + ["--latency-budget", "10s"]) == 0
    report = json.loads((out / "select.json").read_text())
    ort_rows = [r for r in report["rows"] if r["backend"] == "onnxruntime"]
    assert all(r["iters"] == 9 and len(r["round_p50_ms"]) == 3 for r in ort_rows)  # 3 rounds x 3 calls, pooled
    rows = ort_rows
    assert [(r["model"], r["input"]) for r in rows] == [("s.onnx", "32x64"), ("d.onnx", "32x64"), ("d.onnx", "16x32")]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    best = max(r["miou"] for r in ok)
    assert report["choice"] == min((r for r in ok if r["miou"] >= best - sel.TIE_POINTS), key=lambda r: r["p50_ms"])
    assert report["budget_ms"] == 10000.0 and "environment" in report and (out / "select.md").is_file()
    printed = capsys.readouterr().out
    assert "choice: " in printed and "s.onnx" in printed
    assert sel.main(args + ["--latency-budget", "0.0001ms"]) == 1
    report = json.loads((out / "select.json").read_text())
    assert report["choice"] is None and report["message"].startswith("nothing fits the 0.0001 ms budget")
    assert "the fastest option is" in capsys.readouterr().out


def test_a_file_no_backend_takes_is_a_usage_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert sel.main(["--models", str(tmp_path / "notes.txt"), "--latency-budget", "30ms",
                     "--out", str(tmp_path / "o")]) == 2


def test_with_data_given_no_note_asks_for_data(tmp_path, capsys):
    """Every candidate fails (a truncated model): the plot note used to say "(pass --data)" though --data was given."""
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(b"\x08\x07truncated")
    out = tmp_path / "sel"
    assert sel.main(["--models", str(cut), "--data", "synthetic", "--latency-budget", "30ms", "--warmup", "0",
                     "--iters", "1", "--rounds", "1", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "no candidate could be measured here (see the status column)" in printed
    assert "no plot: nothing was both timed and scored (see the status column)" in printed
    assert "pass --data" not in printed


@pytest.mark.parametrize("option, value", [("--max-drop", "nan"), ("--max-drop", "-1"), ("--tie", "nan"),
                                           ("--iters", "0"), ("--rounds", "0"), ("--warmup", "-1")])
def test_out_of_range_numbers_are_usage_errors_naming_the_option(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as e:
        sel.main(["--models", "m.onnx", "--latency-budget", "30ms", "--out", str(tmp_path / "o"), option, value])
    assert e.value.code == 2 and f"argument {option}: '{value}' is not" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
