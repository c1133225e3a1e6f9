"""train.compare: the table and gap-closed math on given numbers, the run commands, log parsing, and an
end-to-end comparison of two methods on tiny synthetic data (subprocesses), resumed by a second call."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_distill import tiny_config
from test_fkd_layers import save_teacher

from runtime.errors import UserError
from runtime.io import pid_alive
from train.compare.report import gap_closed, markdown_report, read_val_curve, spent_warnings, summarize, table
from train.compare.run import compare, default_val_every, distill_command, main
from train.engine.budget import resolve_counts


def result(miou: float, best: float, it: int, spi: float, mem: float) -> dict:
    return {"final_miou": miou, "best_miou": best, "iterations": it, "s_per_iter": spi, "elapsed_s": it * spi,
            "peak_mem_mb": mem, "peak_mem_kind": "cpu_peak_rss"}


def test_gap_closed() -> None:
    assert gap_closed(0.52, 0.42, 0.62) == pytest.approx(0.5)
    assert gap_closed(0.42, 0.42, 0.62) == 0.0
    assert gap_closed(0.37, 0.42, 0.62) == pytest.approx(-0.25)  # worse than the student alone
    assert gap_closed(0.5, 0.42, 0.42) is None  # no gap to close
    assert gap_closed(0.5, None, 0.62) is None and gap_closed(0.5, 0.42, None) is None


def test_summarize_means_stds_and_gap() -> None:
    runs = {
        "baseline": [result(0.40, 0.41, 100, 0.5, 900), result(0.44, 0.45, 110, 0.45, 950)],
        "kd": [result(0.50, 0.50, 80, 0.6, 1200), result(0.54, 0.56, 84, 0.55, 1100)],
    }
    rows = {r["method"]: r for r in summarize(runs, teacher_miou=0.62)}
    b, k = rows["baseline"], rows["kd"]
    assert b["miou_mean"] == pytest.approx(0.42) and k["miou_mean"] == pytest.approx(0.52)
    assert b["miou_std"] == pytest.approx(math.sqrt(((0.40 - 0.42) ** 2 + (0.44 - 0.42) ** 2) / 1))
    assert k["best_miou_mean"] == pytest.approx(0.53)
    assert k["gap_closed"] == pytest.approx((0.52 - 0.42) / (0.62 - 0.42)) and b["gap_closed"] == 0.0
    assert k["iterations"] == 82 and k["s_per_iter"] == pytest.approx(0.575)
    assert k["peak_mem_mb"] == 1200 and b["peak_mem_mb"] == 950  # the max over seeds
    assert k["miou_per_seed"] == [0.50, 0.54]
    one = summarize({"kd": [result(0.5, 0.5, 1, 1.0, 1.0)]}, teacher_miou=0.6)[0]
    assert one["miou_std"] == 0.0 and one["gap_closed"] is None  # no baseline among the methods

    text = table(list(rows.values()))
    assert "52.00 ± 2.83" in text and "50.0 %" in text and "peak RSS MB" in text and "1200" in text
    md = markdown_report(list(rows.values()), 0.62, "10m", 2)
    # spent: kd (80·0.6 + 84·0.55) / 2 = 47.1 s against the baseline's 49.75 s: −5.3 %, outside ±5 %
    assert "| kd | 52.00 ± 2.83 | 50.0 % | 50.0 % | 82 | - | - | 0.575 | 47.1 (-5.3 %) ! | - | 1200 |" in md
    assert "teacher mIoU 62.00 %" in md and "600s" in md


def test_default_val_every_and_commands(tmp_path: Path) -> None:
    assert default_val_every("10m") == "60s"
    assert default_val_every("100") == "10"
    assert default_val_every("5") == "1"
    cmd = distill_command("configs/compare.yaml", "kd", 3, "10m", "t.pt", tmp_path, "60s", ["optim.lr=0.1"])
    assert cmd[:5] == [sys.executable, "-m", "train.distill", "--config", "configs/compare.yaml"]
    assert cmd[5] == "optim.lr=0.1"  # user overrides first: the comparison's own keys come after them
    assert set(cmd[6:]) == {"method=kd", "budget=10m", "seed=3", f"train.runs_dir={tmp_path}",
                            "train.val_every=60s", "name=compare-kd-s3", "teacher=t.pt"}


def test_reserved_overrides_and_missing_teacher(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--budget"):
        compare(None, ["baseline"], "10", 1, None, tmp_path, ["budget=5"])
    with pytest.raises(UserError, match="--teacher"):
        compare(None, ["baseline", "kd"], "10", 1, None, tmp_path, [])
    with pytest.raises(UserError, match="nope.pt"):
        compare(None, ["kd"], "10", 1, str(tmp_path / "nope.pt"), tmp_path, [])
    with pytest.raises(UserError, match="choose from"):
        compare(None, ["kdd"], "10", 1, None, tmp_path, [])
    with pytest.raises(UserError, match="accepted|use iterations"):
        compare(None, ["baseline"], "ten minutes", 1, None, tmp_path, [])


def test_read_val_curve(tmp_path: Path) -> None:
    lines = [{"kind": "train", "iteration": 1, "elapsed": 0.5, "loss": 2.0},
             {"kind": "val", "iteration": 2, "elapsed": 1.25, "mIoU": 0.1},
             {"kind": "val", "iteration": 4, "elapsed": 2.5, "mIoU": 0.3}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert read_val_curve(tmp_path / "log.jsonl") == [(1.25, 0.1), (2.5, 0.3)]
    assert read_val_curve(tmp_path / "missing.jsonl") == []


def test_compare_two_methods_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "cmp"
    args = ["--config", str(tiny_config(tmp_path)), "--methods", "baseline,kd", "--budget", "1", "--seeds", "1",
            "--teacher", str(teacher), "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["budget"] == "1 iterations" and report["seeds"] == [0] and report["failed"] == []
    rows = {r["method"]: r for r in report["methods"]}
    assert list(rows) == ["baseline", "kd"]
    t, base, kd = report["teacher"]["miou"], rows["baseline"]["miou_mean"], rows["kd"]["miou_mean"]
    assert 0.0 <= t <= 1.0
    for m, r in rows.items():
        run = json.loads((out / f"tiny-{m}-s0" / "results.json").read_text())
        assert r["miou_per_seed"] == [run["final_miou"]] and r["iterations"] == run["iterations"] == 1
        assert r["s_per_iter"] == run["s_per_iter"] > 0 and r["peak_mem_mb"] == run["peak_mem_mb"] > 0
        assert read_val_curve(out / f"tiny-{m}-s0" / "log.jsonl")  # the plot has points
    assert rows["kd"]["gap_closed"] == (None if t <= base else pytest.approx((kd - base) / (t - base)))
    md = (out / "compare.md").read_text()
    assert "| baseline |" in md and "| kd |" in md and "gap closed" in md
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    printed = capsys.readouterr().out
    assert "baseline" in printed and "kd" in printed

    # a second call reuses both finished runs (nothing is trained again)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")}
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished earlier") == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")} == stamps


def test_resolve_counts_amortises_and_charges_the_cache() -> None:
    counts = resolve_counts({"baseline": 0.5, "kd": 0.6, "lfd": 0.8}, 60.0, 12.0, ["kd", "lfd"], runs_sharing=4)
    assert counts["baseline"] == {"amortised": 120}  # it reads no cache and pays nothing for it
    assert counts["kd"] == {"amortised": 95, "charged": 80}  # (60 - 12/4) / 0.6, (60 - 12) / 0.6
    assert counts["lfd"] == {"amortised": 71, "charged": 60}


def test_summarize_charged_gap() -> None:
    runs = {"baseline": [result(0.40, 0.4, 120, 0.5, 1)], "kd": [result(0.50, 0.5, 95, 0.6, 1)]}
    charged = {"kd": [result(0.45, 0.45, 80, 0.6, 1)]}
    rows = {r["method"]: r for r in summarize(runs, 0.60, charged=charged, probes={"kd": 0.6},
                                              cache_seconds={"kd": 12.0})}
    assert rows["kd"]["gap_closed"] == pytest.approx(0.5) and rows["kd"]["gap_closed_charged"] == pytest.approx(0.25)
    assert rows["baseline"]["gap_closed_charged"] == 0.0 and rows["kd"]["charged_iterations"] == 80
    text = table(list(rows.values()))
    assert "95 / 80" in text and "25.0 %" in text and "12.0" in text and "0.600" in text


def test_probe_resolved_comparison_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--match probe (the default with a wall-clock budget): probes, a cache built once, exact counts,
    charged runs; --resolved replays the counts into another folder without probing."""
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "cmp"
    args = ["--config", str(tiny_config(tmp_path)), "--methods", "baseline,kd", "--budget", "2s",
            "--teacher", str(teacher), "--out", str(out), "train.probe_steps=2", "train.probe_warmup=1"]
    assert main(args) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["match"] == "probe" and report["failed"] == []
    cache = report["teacher_cache"]
    assert cache["read_by"] == ["kd"] and cache["build_seconds"] > 0 and Path(cache["path"], "manifest.json").is_file()
    probes, counts = report["probes"], report["resolved"]
    assert set(probes) == {"baseline", "kd"} and all(p["s_per_iter"] > 0 for p in probes.values())
    assert counts == resolve_counts({m: p["s_per_iter"] for m, p in probes.items()}, 2.0, cache["build_seconds"],
                                    ["kd"], 1)
    for m, name in (("baseline", "tiny-baseline-s0"), ("kd", "tiny-kd-s0"), ("kd", "tiny-kd-charged-s0")):
        run = json.loads((out / name / "results.json").read_text())
        want = counts[m]["charged" if "charged" in name else "amortised"]
        assert run["iterations"] == run["resolved_iterations"] == want, name
    assert (out / "tiny-kd-s0" / "config.yaml").read_text().count(f"teacher_cache: {cache['path']}") == 1
    assert "gap (cache charged)" in (out / "compare.md").read_text()
    capsys.readouterr()

    again = tmp_path / "replay"
    assert main([*args[:-2], "--out", str(again), "--resolved", str(out / "compare.json"), "--charge", "amortised"]) == 0
    replay = json.loads((again / "compare.json").read_text())
    assert replay["resolved"] == counts and not (again / "probes").exists()
    for m in ("baseline", "kd"):
        assert json.loads((again / f"tiny-{m}-s0" / "results.json").read_text())["iterations"] == counts[m]["amortised"]
    assert not (again / "tiny-kd-charged-s0").exists()
    assert "probing" not in capsys.readouterr().out


def _compare_proc(args: list[str], log: Path) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[3]
    return subprocess.Popen([sys.executable, "-m", "train.compare", *args], cwd=root, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)


def _training_child(run: Path, timeout: float = 120.0) -> int:
    """The pid of the train.distill child once it trains (its lock names it and its log has a step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            steps = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
            owner = json.loads((run / ".lock").read_text())
            if any(s.get("kind") == "train" for s in steps) and pid_alive(owner["pid"]):
                return int(owner["pid"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{run} never started training")


def _gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_compare_stops_with_its_run_and_continues(tmp_path: Path) -> None:
    """SIGTERM: the running child saves last.pt, compare exits 143 saying what is finished; kill -9: the
    child does not outlive it (no orphan holds the lock); a rerun then continues and writes compare.md."""
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "cmp"
    args = ["--config", str(tiny_config(tmp_path)), "--methods", "baseline", "--budget", "8s", "--match",
            "wallclock", "--val-every", "4s", "--teacher", str(teacher), "--out", str(out),
            "train.threads=1", "train.ckpt_every=0"]
    run = out / "tiny-baseline-s0"
    proc = _compare_proc(args, tmp_path / "term.log")
    child = _training_child(run)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert _gone(child)  # the child had exited before compare did
    printed = (tmp_path / "term.log").read_text()
    assert "stopped: 0 of 1 runs finished; tiny-baseline-s0 was interrupted and saved last.pt" in printed
    assert (run / "last.pt").is_file()

    proc = _compare_proc(args, tmp_path / "kill.log")
    child = _training_child(run)
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(child), "the train.distill child outlived its killed comparison"

    proc = _compare_proc(args, tmp_path / "rerun.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "rerun.log").read_text()
    result = json.loads((run / "results.json").read_text())
    assert result["resumed_from"] is not None and result["elapsed_s"] >= 8.0
    assert "| baseline |" in (out / "compare.md").read_text()


def test_spent_seconds_outside_five_percent_get_a_warning_row() -> None:
    runs = {"baseline": [result(0.40, 0.4, 100, 0.6, 1)], "kd": [result(0.45, 0.45, 90, 0.6, 1)],
            "lfd": [result(0.46, 0.46, 96, 0.6, 1)]}
    costs = {"kd": {"ratio": 1.1, "ratio_low": 1.08, "ratio_high": 1.12}}
    rows = {r["method"]: r for r in summarize(runs, 0.6, costs=costs, cache_seconds={"kd": 8.0, "lfd": 8.0},
                                              runs_sharing=4)}
    # spent = elapsed + cache / runs sharing: baseline 60, kd 54 + 2 = 56 (-6.7 %), lfd 57.6 + 2 = 59.6
    assert rows["kd"]["spent_s"] == pytest.approx(56.0) and not rows["kd"]["spent_ok"]
    assert rows["lfd"]["spent_ok"] and rows["baseline"]["spent_ratio"] == 1.0
    md = markdown_report(list(rows.values()), 0.6, "60s", 1)
    assert md.count("**warning**") == 1 and "kd spent -6.7 %" in md
    assert "1.100 (1.080-1.120)" in md


def test_flops_matched_comparison(tmp_path: Path) -> None:
    """--match flops: every step's FLOPs counted, an online teacher's forward included (KD's step is the
    baseline's plus exactly one teacher forward on the batch), a cache's build counted once and shared;
    each run trains floor((N · f_baseline − cache share) / f_method) iterations, and the report checks FLOPs."""
    from train.engine.checkpoint import model_from_checkpoint
    from train.models.flops import forward_flops

    teacher = save_teacher(tmp_path / "teacher.pt")
    t_model, _, _ = model_from_checkpoint(teacher, "cpu")
    config = tiny_config(tmp_path)  # a recipe that reads a cache: --teacher-cache off must still mean online
    config.write_text(config.read_text().replace("distill:", "distill:\n  teacher_cache: auto"))
    base = ["--config", str(config), "--methods", "baseline,kd", "--budget", "4", "--match", "flops",
            "--teacher", str(teacher), "--charge", "amortised"]
    with pytest.raises(UserError, match="baseline iterations"):
        compare(str(tiny_config(tmp_path)), ["baseline"], "10s", 1, None, tmp_path / "x", [], match="flops")

    online = tmp_path / "online"
    assert main([*base, "--out", str(online), "--teacher-cache", "off"]) == 0
    report = json.loads((online / "compare.json").read_text())
    f = {m: r["step_flops"] for m, r in report["flops"].items()}
    assert report["match"] == "flops" and report["cache_flops"] == 0
    assert f["kd"] - f["baseline"] == forward_flops(t_model, (2, 3, 64, 128))  # batch 2 of 64 x 128 crops
    assert json.loads((online / "tiny-kd-s0" / "results.json").read_text())["teacher_cache"] is None
    assert report["resolved"] == {"baseline": {"amortised": 4}, "kd": {"amortised": max(1, 4 * f["baseline"] // f["kd"])}}
    for m in ("baseline", "kd"):
        run = json.loads((online / f"tiny-{m}-s0" / "results.json").read_text())
        assert run["iterations"] == report["resolved"][m]["amortised"]
    rows = {r["method"]: r for r in report["methods"]}
    assert rows["kd"]["flops_spent"] == rows["kd"]["iterations"] * f["kd"]
    md = (online / "compare.md").read_text()
    assert "TFLOP spent (vs baseline)" in md and "counted FLOPs of that many baseline steps" in md

    cached = tmp_path / "cached"
    assert main([*base, "--out", str(cached)]) == 0
    report = json.loads((cached / "compare.json").read_text())
    f = {m: r["step_flops"] for m, r in report["flops"].items()}
    assert f["kd"] == f["baseline"]  # cache reads are not compute; the KD loss has no counted products
    assert report["cache_flops"] == 6 * forward_flops(t_model, (1, 3, 64, 128))  # one forward per training image
    assert report["resolved"] == resolve_counts({m: float(v) for m, v in f.items()}, 4.0 * f["baseline"],
                                                float(report["cache_flops"]), ["kd"], 1)


def test_exact_cache_comparison_builds_one_cache_per_seed(tmp_path: Path) -> None:
    """distill.cache_mode=exact: one exact cache per seed, built before the runs, each kd run reading the
    crops of its own seed; a wall-clock budget is refused (the samples must be known in advance)."""
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "exact"
    args = ["--config", str(tiny_config(tmp_path)), "--methods", "baseline,kd", "--budget", "2", "--seeds", "2",
            "--teacher", str(teacher), "--out", str(out), "distill.cache_mode=exact"]
    assert main(args) == 0
    caches = {}
    for seed in (0, 1):
        rec = json.loads((out / f"tiny-kd-s{seed}" / "results.json").read_text())["teacher_cache"]
        assert rec["mode"] == "exact" and rec["samples"] >= 2 * 2 and not rec["built_by_this_run"]
        caches[seed] = rec["path"]
    assert caches[0] != caches[1]
    with pytest.raises(UserError, match="iteration budget"):
        compare(str(tiny_config(tmp_path)), ["baseline", "kd"], "5s", 1, str(teacher), tmp_path / "t",
                ["distill.cache_mode=exact"])


def test_exact_cache_with_flops_matching(tmp_path: Path) -> None:
    """--match flops with an exact cache: each reading method pays its share of the teacher's forward on the
    stored crops (f_online − f_T + f_T / R, R = 2 methods), the per-seed cache is built after the counts and
    holds the longest run's crops, and every run reads it without building."""
    from train.engine.checkpoint import model_from_checkpoint
    from train.models.flops import forward_flops

    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "exact-flops"
    assert main(["--config", str(tiny_config(tmp_path)), "--methods", "baseline,kd,lfd", "--budget", "3", "--match",
                 "flops", "--teacher", str(teacher), "--out", str(out), "distill.cache_mode=exact"]) == 0
    report = json.loads((out / "compare.json").read_text())
    f_t = forward_flops(model_from_checkpoint(teacher, "cpu")[0], (2, 3, 64, 128))
    for m in ("kd", "lfd"):
        rec = report["flops"][m]
        assert rec["teacher_forward_flops"] == f_t
        assert rec["step_flops"] == pytest.approx(rec["online_step_flops"] - f_t / 2)
    counts = {m: c["amortised"] for m, c in report["resolved"].items()}
    assert counts["baseline"] == 3 and all("charged" not in c for c in report["resolved"].values())
    for m in ("kd", "lfd"):
        rec = json.loads((out / f"tiny-{m}-s0" / "results.json").read_text())["teacher_cache"]
        assert rec["mode"] == "exact" and not rec["built_by_this_run"]
        assert rec["samples"] >= 2 * max(counts["kd"], counts["lfd"])


def test_an_iteration_budget_is_not_checked_for_seconds() -> None:
    """Equal iterations match no compute: KD's 20 % slower steps are reported, not flagged."""
    runs = {"baseline": [result(0.40, 0.41, 100, 0.5, 900)], "kd": [result(0.42, 0.42, 100, 0.6, 900)]}
    checked = {r["method"]: r for r in summarize(runs, 0.6)}
    assert checked["kd"]["spent_ok"] is False and spent_warnings(list(checked.values()))
    rows = summarize(runs, 0.6, check=False)
    assert [r["spent_ok"] for r in rows] == [None, None] and spent_warnings(rows) == []
    md = markdown_report(rows, 0.6, "100", 1, "iterations")
    assert "warning" not in md and "60.0 (+20.0 %) |" in md
