from __future__ import annotations

import json
import os
import stat

import pytest

import runtime.jetson_bench as jb
from runtime.tegrastats import TegraSample, parse_line, summarize

# Recorded line shapes (values trimmed from real boards' output).
ORIN_JP5 = ("RAM 2448/30536MB (lfb 6308x4MB) SWAP 0/15268MB (cached 0MB) CPU [0%@729,3%@729,off,12%@729] "
            "EMC_FREQ 0%@2133 GR3D_FREQ 7%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C cpu@44.687C soc2@43.843C "
            "soc0@44.125C gpu@-256C tj@45.5C soc1@43.968C CV2@-256C VDD_GPU_SOC 1596mW/1596mW "
            "VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2817mW/2817mW VDDQ_VDD2_1V8AO 503mW/503mW")
ORIN_JP6 = ("05-14-2024 10:11:12 RAM 3021/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@1510,1%@1510,"
            "0%@1510,5%@1510,0%@729,0%@729] GR3D_FREQ 0% cpu@50.25C soc2@48.875C soc0@49.531C gpu@48.906C "
            "tj@50.25C soc1@48.75C VDD_IN 4852mW/4852mW VDD_CPU_GPU_CV 481mW/481mW VDD_SOC 1362mW/1362mW")
XAVIER = ("RAM 3410/31920MB (lfb 5914x4MB) SWAP 0/15960MB (cached 0MB) CPU [1%@1190,0%@1190,2%@1190,0%@1190,"
          "off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 APE 150 MTS fg 0% bg 0% AO@38C GPU@40C "
          "Tdiode@41.25C PMIC@100C AUX@37.5C CPU@39.5C thermal@39.05C Tboard@37C GPU 0/0 CPU 311/311 "
          "SOC 1554/1554 CV 0/0 VDDRQ 155/155 SYS5V 2258/2258")
NANO = ("RAM 1766/3964MB (lfb 197x4MB) SWAP 0/1982MB (cached 0MB) CPU [24%@1224,15%@1224,13%@1224,10%@1224] "
        "EMC_FREQ 0%@1600 GR3D_FREQ 0%@921 APE 25 PLL@21C CPU@25C PMIC@100C GPU@23.5C AO@33.5C thermal@24.5C "
        "POM_5V_IN 2160/2160 POM_5V_GPU 0/0 POM_5V_CPU 361/361")


def test_orin_jetpack5_sums_rails():
    s = parse_line(ORIN_JP5)
    assert s.rails_mw == {"VDD_GPU_SOC": 1596, "VDD_CPU_CV": 399, "VIN_SYS_5V0": 2817, "VDDQ_VDD2_1V8AO": 503}
    power, source = s.total_power_mw()
    assert power == 1596 + 399 + 2817 + 503 and source.startswith("sum(")
    assert s.temps_c["tj"] == 45.5 and "gpu" not in s.temps_c  # -256C = absent sensor
    assert (s.ram_used_mb, s.ram_total_mb) == (2448, 30536) and s.cpu_load == [0, 3, None, 12] and s.gpu_load == 7


def test_orin_jetpack6_uses_vdd_in():
    s = parse_line(ORIN_JP6)
    assert s.total_power_mw() == (4852.0, "VDD_IN")
    assert s.temps_c["gpu"] == 48.906 and len(s.cpu_load) == 6 and s.gpu_load == 0


def test_xavier_rails_without_units():
    s = parse_line(XAVIER)
    assert s.rails_mw == {"GPU": 0, "CPU": 311, "SOC": 1554, "CV": 0, "VDDRQ": 155, "SYS5V": 2258}
    assert s.total_power_mw()[0] == 311 + 1554 + 155 + 2258
    assert s.temps_c["GPU"] == 40 and "PMIC" not in s.temps_c and s.cpu_load[4:] == [None] * 4


def test_nano_uses_pom_5v_in():
    s = parse_line(NANO)
    assert s.total_power_mw() == (2160.0, "POM_5V_IN")
    assert s.rails_mw["POM_5V_CPU"] == 361 and "RAM" not in s.rails_mw and "SWAP" not in s.rails_mw


def test_summarize_window():
    samples = [TegraSample(time=t, rails_mw={"VDD_IN": p}, temps_c={"tj": c})
               for t, p, c in [(0, 1000, 40), (1, 3000, 50), (2, 5000, 60), (3, 9000, 70)]]
    s = summarize(samples, 0.5, 2.5)
    assert s["samples"] == 2 and s["power_w_mean"] == pytest.approx(4.0) and s["temp_c_max"] == 60


def test_jetson_bench_with_recorded_tegrastats(onnx_model, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "bin" / "tegrastats"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN_JP6}'; sleep 0.02; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "jb"
    rc = jb.main(["--models", str(onnx_model()), str(tmp_path / "gone.engine"), "--duration", "0.3", "--warmup", "1",
                  "--interval-ms", "20", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "jetson_bench.json").read_text())
    ok, bad = report["rows"]
    assert ok["status"] == "ok" and ok["samples"] > 0 and ok["power_source"] == "VDD_IN"
    assert ok["power_w"] == pytest.approx(4.852)
    assert ok["energy_mj"] == pytest.approx(4.852 * 1000 / ok["fps"])
    assert bad["status"].startswith("error: ")
    assert {"l4t", "jetpack", "tensorrt", "nvpmodel", "jetson_clocks"} <= set(report["jetson"])
    assert (out / "jetson_bench.md").is_file()


def test_jetson_bench_without_tegrastats(onnx_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert jb.main(["--models", str(onnx_model()), "--duration", "0.1", "--out", str(tmp_path / "o")]) == 2
    assert "--no-power" in capsys.readouterr().err
