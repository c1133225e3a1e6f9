"""Training loses nothing: the NaN guard keeps the last finite state, SIGTERM saves and resumes, a torn log
line is dropped, a run without a validation score ends cleanly, corrupt samples are skipped and reported,
and a file that is not a checkpoint is one sentence (a seeded fuzz)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[3]


def tiny(tmp_path: Path, budget: str, *extra: str) -> list[str]:
    return [f"budget={budget}", "name=t", f"train.runs_dir={tmp_path}", "train.log_every=1", "train.amp=false",
            "train.device=cpu", "train.threads=1", "recipe=tiny_lraspp_mobilenetv3", "data.synthetic.size=64x128",
            "data.synthetic.num_train=4", "data.synthetic.num_val=2", "data.synthetic.cache=false",
            "data.crop_size=64x128", "batch=2", "data.val_batch_size=2", "data.workers=0", *extra]


def teacher_cmd(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "train.teacher", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def all_finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def test_the_nan_guard_keeps_the_last_finite_state_and_its_advice_works(tmp_path):
    pytest.importorskip("train.data")
    assert teacher_cmd(tiny(tmp_path, "20")).returncode == 0
    last = tmp_path / "t" / "last.pt"
    diverged = teacher_cmd(tiny(tmp_path, "40", "optim.lr=1e30"))
    assert diverged.returncode == 2
    err = diverged.stderr.strip().splitlines()[-1]
    assert "the loss is not finite" in err and "last finite state, after iteration 20" in err
    assert all_finite(last)  # the finite last.pt was not replaced by the broken weights
    # the advice: a lower lr, the same command, resumes from iteration 20 and finishes
    again = teacher_cmd(tiny(tmp_path, "40", "optim.lr=0.01"))
    assert again.returncode == 0, again.stderr
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert results["resumed_from"] == 20 and results["iterations"] == 40 and all_finite(last)


def test_sigterm_saves_last_pt_exits_143_and_resumes(tmp_path):
    pytest.importorskip("train.data")
    proc = subprocess.Popen([sys.executable, "-m", "train.teacher", *tiny(tmp_path, "100000")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "t" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and "last.pt saved" in err
    state = torch.load(tmp_path / "t" / "last.pt", map_location="cpu", weights_only=True)
    stopped = int(state["iteration"])
    assert stopped >= 3
    done = teacher_cmd(tiny(tmp_path, str(stopped + 2)))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "t" / "results.json").read_text())["resumed_from"] == stopped


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path, capsys):
    pytest.importorskip("train.data")
    from train import teacher

    assert teacher.main(tiny(tmp_path, "3")) == 0
    log = tmp_path / "t" / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"kind": "train", "iteration": 4, "elap')  # a kill -9 in the middle of a write
    capsys.readouterr()
    assert teacher.main(tiny(tmp_path, "5")) == 0
    assert "dropped 1 incomplete line" in capsys.readouterr().err
    records = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5]


def test_a_run_without_a_validation_score_writes_final_pt_and_says_why_no_best(tmp_path, capsys):
    pytest.importorskip("train.data")
    from train import teacher

    assert teacher.main(tiny(tmp_path, "2", "data.max_val_images=0")) == 0
    captured = capsys.readouterr()
    assert "no validation score" in captured.out and "no best.pt" in captured.err
    run = tmp_path / "t"
    assert (run / "final.pt").is_file() and not (run / "best.pt").exists()
    assert json.loads((run / "results.json").read_text())["best_checkpoint"] is None


def test_skip_bad_leaves_out_counts_and_reports_corrupt_samples(tmp_path, capsys):
    pytest.importorskip("train.data")
    from runtime.datasets.synthetic import write_folder_dataset
    from train import teacher

    root = write_folder_dataset(tmp_path / "ds", num_train=5, num_val=3, size=(64, 128), seed=1)
    first_val = sorted((root / "images" / "val").iterdir())[0]
    bad_train = sorted((root / "images" / "train").iterdir())[2]
    first_val.write_bytes(b"not a png")  # build_loaders used to read val[0] directly
    bad_train.write_bytes(b"\x89PNG truncated")
    base = tiny(tmp_path, "4", f"dataset=folder:{root}", "data.skip_bad=true")
    assert teacher.main(base) == 0
    err = capsys.readouterr().err
    assert "skipped 1 corrupt train sample" in err and "skipped 1 corrupt val sample" in err
    skipped = json.loads((tmp_path / "t" / "results.json").read_text())["skipped_samples"]
    assert skipped == {"train": [str(bad_train)], "val": [str(first_val)]}
    # without skip_bad the same data stops with the file named
    assert teacher.main(tiny(tmp_path, "4", f"dataset=folder:{root}", "name=u")) == 2
    assert str(first_val) in capsys.readouterr().err


def test_validation_leaves_a_corrupt_sample_out_instead_of_scoring_its_neighbour_twice(tmp_path):
    pytest.importorskip("train.data")
    from runtime.datasets.synthetic import write_folder_dataset
    from train.config import load_config
    from train.data import build_loaders, skipped_samples

    root = write_folder_dataset(tmp_path / "ds", num_train=2, num_val=3, size=(64, 128), seed=1)
    bad = sorted((root / "labels" / "val").iterdir())[1]
    bad.write_bytes(b"junk")
    cfg = load_config(None, tiny(tmp_path, "1", f"dataset=folder:{root}", "data.skip_bad=true",
                                 "data.val_batch_size=3"))
    _, val_loader, _ = build_loaders(cfg)
    batches = [b for b in val_loader if b is not None]
    assert sum(b[0].shape[0] for b in batches) == 2  # 3 images, one left out, none counted twice
    assert skipped_samples(val_loader) == [str(sorted((root / "images" / "val").iterdir())[1])]


def _fuzz_files(tmp_path: Path, real: bytes, n: int, seed: int = 0) -> list[Path]:
    """Seeded non-checkpoint files: random bytes, text, truncations and byte flips of a real checkpoint,
    zip archives with the wrong members, and pickles of plain values."""
    import pickle
    import zipfile

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = tmp_path / f"f{i:03d}.pt"
        kind = i % 6
        if kind == 0:
            p.write_bytes(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes())
        elif kind == 1:
            p.write_text("hello, not a checkpoint " * int(rng.integers(1, 50)))
        elif kind == 2:
            p.write_bytes(real[: int(rng.integers(0, len(real)))])
        elif kind == 3:
            data = bytearray(real)
            for j in rng.integers(0, len(data), int(rng.integers(1, 64))):
                data[j] = int(rng.integers(0, 256))
            p.write_bytes(bytes(data))
        elif kind == 4:
            with zipfile.ZipFile(p, "w") as z:
                z.writestr(f"archive/data{int(rng.integers(0, 9))}.pkl", rng.bytes(int(rng.integers(1, 200))))
        else:
            value = [None, 3, "text", [1, 2], {"model": 1}, {"format_version": 1, "model": {}, "arch": [],
                                                            "data": {}, "train": {}}][int(rng.integers(0, 6))]
            p.write_bytes(pickle.dumps(value, protocol=2))
        out.append(p)
    return out


def test_every_file_that_is_not_a_checkpoint_is_one_sentence(tmp_path):
    pytest.importorskip("train.data")
    from runtime.metadata import DataInfo, default_palette
    from train.config import ModelConfig
    from train.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from train.models import build_model

    model = build_model(ModelConfig(recipe="tiny_lraspp_mobilenetv3"), 3)
    info = DataInfo(classes=["a", "b", "c"], palette=default_palette(3), input_size=(64, 128))
    real = save_checkpoint(tmp_path / "real.pt", model, info, {"method": "baseline"}).read_bytes()
    leaked = []
    for p in _fuzz_files(tmp_path, real, 512):
        try:
            model_from_checkpoint(load_checkpoint(p))
        except UserError as e:
            assert str(p) in str(e) and "\n" not in str(e)
        except Exception as e:  # noqa: BLE001 - the point of the test
            leaked.append(f"{p.name}: {type(e).__name__}: {e}")
    assert not leaked, leaked[:5]


def test_commands_give_one_sentence_for_a_text_file_named_pt(tmp_path, capsys):
    from train import evaluate

    t = tmp_path / "t.pt"
    t.write_text("hello, not a checkpoint\n")
    assert evaluate.main(["--checkpoint", str(t)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and str(t) in err and err.count("\n") == 1


def test_unwritable_outputs_fail_before_the_work(tmp_path, capsys):
    from train import teacher

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert teacher.main(tiny(tmp_path, "2", f"train.runs_dir={blocker}/runs")) == 2
    err = capsys.readouterr().err
    assert "cannot write run folder" in err and "afile" in err
    assert not os.path.exists(tmp_path / "t")
