"""train/teacher_cache.py and python -m train.cache: cached targets equal the online teacher's without
augmentation (KD and LFD losses), stale caches are refused, an interrupted build resumes, the manifest
round-trips, and train.distill reads a cache (auto: built on first use, reused after)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distill import tiny_config
from test_fkd_layers import save_teacher

import train.teacher_cache as tc
from runtime.errors import UserError
from runtime.io import sha256_file
from train.checkpoint import model_from_checkpoint
from train.config import load_config
from train.data import SegmentationTorchDataset, build_readers
from train.distill import main as distill_main
from train.losses import build_objective, teacher_reads
from train.models import build_model
from train.objective import StepInfo


def plain(tmp_path: Path, *extra: str):
    """The tiny recipe without augmentation: scale 1, a crop the size of the image, no flip, no jitter."""
    return load_config(tiny_config(tmp_path), ["data.scale_range=[1,1]", "data.flip=false",
                                               "data.color_jitter=0", "data.crop_size=[64,128]", *extra])


def build(tmp_path: Path, cfg, teacher: Path, outputs=("logits", "decoder"), **kw) -> tuple[Path, dict]:
    out = tmp_path / "cache"
    return out, tc.build_cache(teacher, cfg, out, list(outputs), quiet=True, **kw)


def test_cache_equals_online_teacher_without_augmentation(tmp_path: Path) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path, "method=lfd")
    out, manifest = build(tmp_path, cfg, teacher_path)
    assert manifest["complete"] and set(manifest["outputs"]) == {"logits", "decoder"}
    teacher, _, _ = model_from_checkpoint(teacher_path)
    reader, _ = build_readers(cfg.data)
    ds = SegmentationTorchDataset(reader, True, cfg.data.crop_size, cfg.data.scale_range, False, 0.0,
                                  cfg.data.mean, cfg.data.std, targets=tc.TargetReader(out, manifest,
                                                                                       ["logits", "decoder"]))
    x, y, t = zip(*(ds[(i, 100 + i)] for i in range(2)))
    x, y = torch.stack(x), torch.stack(y)
    cached = tc.cached_output(torch.utils.data.default_collate(list(t)), torch.device("cpu"))
    with torch.no_grad():
        online = teacher(x)
    torch.testing.assert_close(cached.logits, online.logits, atol=2e-2, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(cached.features["decoder"], online.features["decoder"], atol=2e-2, rtol=2e-3)

    torch.manual_seed(0)
    student = build_model(cfg.model, online.logits.shape[1]).train()
    s = student(x)
    for method in ("kd", "lfd"):
        cfg.distill.method = method
        torch.manual_seed(1)
        objective = build_objective(cfg.distill, student.feature_info, teacher.feature_info,
                                    online.logits.shape[1], False)
        step = StepInfo(5000, 0.5)  # past LFD's KL warm-up: every term is on
        a = objective(s, online, y, step)
        b = objective(s, cached, y, step)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=2e-3, rtol=2e-3, msg=f"{method}.{k}")
        assert float(a["kd" if method == "kd" else "kl"].detach()) > 1e-3  # a term that reads the teacher, not zero


def test_manifest_round_trips_and_names_what_it_stores(tmp_path: Path) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path)
    out, manifest = build(tmp_path, cfg, teacher_path)
    again = tc.read_manifest(out)
    assert again == json.loads(json.dumps(manifest))
    assert again["teacher_sha256"] == sha256_file(teacher_path)
    assert again["split"] == "train" and len(again["image_ids"]) == 6
    assert again["dataset"]["dataset"] == "synthetic" and again["dataset"]["synthetic"]["num_train"] == 6
    teacher, _, _ = model_from_checkpoint(teacher_path)
    assert tc.teacher_feature_info(again) == list(teacher.feature_info)
    arr = np.load(out / "decoder" / "000003.npy")
    assert arr.dtype == np.float16 and arr.shape[0] == again["outputs"]["decoder"]["channels"]
    stride = again["outputs"]["decoder"]["stride"]
    assert arr.shape[1:] == (64 // stride, 128 // stride)


def test_stale_cache_is_refused_with_what_differs(tmp_path: Path) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path)
    out, manifest = build(tmp_path, cfg, teacher_path)
    ids = manifest["image_ids"]
    other = save_teacher(tmp_path / "other.pt", recipe="tiny_lraspp_mobilenetv3")
    with pytest.raises(UserError, match="another teacher"):
        tc.check_cache(out, tc.cache_key(sha256_file(other), cfg, ids), ["logits"])
    resized = plain(tmp_path, "data.val_size=[32,64]")
    with pytest.raises(UserError, match="preprocess"):
        tc.check_cache(out, tc.cache_key(manifest["teacher_sha256"], resized, ids), ["logits"])
    seed = plain(tmp_path, "data.synthetic.seed=3")
    with pytest.raises(UserError, match="dataset"):
        tc.check_cache(out, tc.cache_key(manifest["teacher_sha256"], seed, ids), ["logits"])
    with pytest.raises(UserError, match="image ids"):
        tc.check_cache(out, tc.cache_key(manifest["teacher_sha256"], cfg, ids[:-1]), ["logits"])
    with pytest.raises(UserError, match="also reads stage3"):
        tc.check_cache(out, tc.cache_key(manifest["teacher_sha256"], cfg, ids), ["logits", "stage3"])
    with pytest.raises(UserError, match="another teacher"):  # building into it for another teacher
        tc.build_cache(other, cfg, out, ["logits"], quiet=True)


def test_interrupted_build_resumes_to_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path)
    ref, _ = build(tmp_path / "ref", cfg, teacher_path, batch_size=2)
    calls = {"n": 0}
    real = tc._save_npy

    def dies_on_the_fifth(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(path, array)

    monkeypatch.setattr(tc, "_save_npy", dies_on_the_fifth)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        tc.build_cache(teacher_path, cfg, out, ["logits", "decoder"], batch_size=2, quiet=True)
    assert not tc.read_manifest(out)["complete"]
    with pytest.raises(UserError, match="incomplete"):
        tc.check_cache(out, tc.cache_key(sha256_file(teacher_path), cfg, tc.read_manifest(out)["image_ids"]),
                       ["logits"])
    kept = sorted(p.name for p in (out / "logits").glob("*.npy"))
    assert 0 < len(kept) < 6 and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(tc, "_save_npy", real)
    saved = {"n": 0}
    monkeypatch.setattr(tc, "_save_npy", lambda p, a: (saved.__setitem__("n", saved["n"] + 1), real(p, a)))
    manifest = tc.build_cache(teacher_path, cfg, out, ["logits", "decoder"], batch_size=2, quiet=True)
    assert manifest["complete"] and saved["n"] == 12 - 4  # only what the interrupted build had not written
    for f in sorted((ref / "logits").glob("*.npy")) + sorted((ref / "decoder").glob("*.npy")):
        assert np.array_equal(np.load(f), np.load(out / f.parent.name / f.name)), f


def test_size_limit_refuses_with_how_to_store_less(tmp_path: Path) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    with pytest.raises(UserError, match="logits only"):
        build(tmp_path, plain(tmp_path), teacher_path, max_gb=1e-6)


def test_teacher_reads_per_method() -> None:
    cfg = load_config(None, ["method=kd"]).distill
    assert teacher_reads(cfg) == ["logits"]
    cfg.method = "lfd+fkd"
    cfg.lfd.extra_pairs = [["stage3", "stage3"]]
    assert teacher_reads(cfg) == ["logits", "decoder", "stage3", "stage4"]
    cfg.method = "baseline"
    assert teacher_reads(cfg) == []


def test_distill_reads_an_auto_cache_and_reuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    config = str(tiny_config(tmp_path))
    common = ["--config", config, "method=lfd", f"teacher={teacher}", "budget=2", "distill.teacher_cache=auto",
              f"distill.cache_dir={tmp_path / 'caches'}"]
    assert distill_main([*common, "name=a"]) == 0
    first = json.loads((tmp_path / "runs" / "a" / "results.json").read_text())
    assert first["teacher_cache"]["built_by_this_run"] and first["iterations"] == 2
    assert first["teacher_cache"]["outputs"] == ["logits", "decoder"]
    assert distill_main([*common, "name=b"]) == 0
    second = json.loads((tmp_path / "runs" / "b" / "results.json").read_text())
    assert not second["teacher_cache"]["built_by_this_run"]
    assert second["teacher_cache"]["path"] == first["teacher_cache"]["path"]
    # a cache that lacks an output the method reads is refused by path (one sentence, exit 2) ...
    path = first["teacher_cache"]["path"]
    fkd = ["--config", config, "method=fkd", f"teacher={teacher}", "budget=1"]
    capsys.readouterr()
    assert distill_main([*fkd, "name=c", f"distill.teacher_cache={path}"]) == 2
    err = capsys.readouterr().err
    assert "also reads stage4" in err and err.count("\n") == 1
    # ... and completed by auto, keeping what it had
    assert distill_main([*fkd, "name=d", "distill.teacher_cache=auto", f"distill.cache_dir={tmp_path / 'caches'}"]) == 0
    third = json.loads((tmp_path / "runs" / "d" / "results.json").read_text())
    assert third["teacher_cache"]["path"] == path and third["teacher_cache"]["built_by_this_run"]
    assert set(tc.read_manifest(path)["outputs"]) == {"logits", "decoder", "stage4"}


def test_teacher_cache_off_survives_yaml(tmp_path: Path) -> None:
    """`off` is a YAML boolean: on the command line and in a recipe it must still mean off."""
    assert load_config(None, ["distill.teacher_cache=off"]).distill.teacher_cache == "off"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("distill:\n  teacher_cache: off\n")
    assert load_config(recipe).distill.teacher_cache == "off"
    assert load_config(None, ["distill.teacher_cache=runs/c"]).distill.teacher_cache == "runs/c"


def corrupt(files: list[Path]) -> None:
    """Three ways a cache file goes bad: truncated, another channel count, a header of another size."""
    truncated, channels, resized = files
    truncated.write_bytes(truncated.read_bytes()[:100])
    a = np.load(channels)
    np.save(channels, np.concatenate([a, a[:1]]), allow_pickle=False)
    b = np.load(resized)
    np.save(resized, np.zeros((b.shape[0], b.shape[1] + 1, b.shape[2]), np.float16), allow_pickle=False)


def test_verify_names_truncated_mis_shaped_and_resized_files(tmp_path: Path) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path)
    out, manifest = build(tmp_path, cfg, teacher)
    assert tc.verify_files(out, manifest) == [] and len(manifest["image_sizes"]) == 6
    files = [out / "logits" / "000001.npy", out / "decoder" / "000002.npy", out / "logits" / "000003.npy"]
    corrupt(files)
    bad = dict(tc.verify_files(out, manifest))
    assert set(bad) == set(files)
    assert "header" in bad[files[0]] or "bytes" in bad[files[0]]
    assert "shape" in bad[files[1]] and "shape" in bad[files[2]]
    # the reader of a training run names the file, what the manifest says and what it found
    reader = tc.TargetReader(out, manifest, ["logits", "decoder"])
    size = tuple(manifest["image_sizes"][0])
    assert set(reader.read(0, size)) == {"logits", "decoder"}
    with pytest.raises(UserError, match="000001.npy is missing or corrupt.*python -m train.cache --teacher"):
        reader.read(1, size)
    with pytest.raises(UserError, match=r"000002.npy holds float16 (\d+)x.*not the float16"):
        reader.read(2, size)
    with pytest.raises(UserError, match="000003.npy holds float16"):
        reader.read(3, size)


def test_the_advice_for_a_corrupt_cache_file_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The case of issue 25: a truncated file under distill.teacher_cache=PATH is one sentence whose
    command, typed as printed, rebuilds it; train.cache --verify checks without building."""
    from train.cache import main as cache_main

    teacher = save_teacher(tmp_path / "teacher.pt")
    config = str(tiny_config(tmp_path))
    out = tmp_path / "cache"
    assert cache_main(["--teacher", str(teacher), "--config", config, "--out", str(out), "method=kd"]) == 0
    reference = np.load(out / "logits" / "000003.npy")
    assert cache_main(["--teacher", str(teacher), "--config", config, "--out", str(out), "--verify"]) == 0
    corrupt([out / "logits" / "000003.npy", out / "logits" / "000004.npy", out / "logits" / "000005.npy"])
    capsys.readouterr()
    run = ["--config", config, "method=kd", f"teacher={teacher}", "budget=1", f"distill.teacher_cache={out}"]
    assert distill_main([*run, "name=a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 file(s)" in err and "000003.npy" in err
    advice = err.split("rebuild them with ")[1].split(" and this run's")[0].split()
    assert advice[:3] == ["python", "-m", "train.cache"]
    assert cache_main(["--teacher", str(teacher), "--config", config, "--out", str(out), "--verify"]) == 2
    assert "3 of 6 files" in capsys.readouterr().err
    assert cache_main([*advice[3:], "--config", config]) == 0  # as printed, with this run's --config
    assert "3 file(s) do not match the manifest and are rebuilt" in capsys.readouterr().out
    # the teacher ran on a batch of another size: equal to float16 rounding
    assert np.allclose(np.load(out / "logits" / "000003.npy"), reference, atol=1e-2)
    assert distill_main([*run, "name=b"]) == 0


def test_an_auto_cache_repairs_a_bad_file_when_opened(tmp_path: Path) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path, "method=kd", "distill.teacher_cache=auto", f"distill.cache_dir={tmp_path / 'c'}")
    path, _, built = tc.open_cache(cfg, teacher, ["logits"], quiet=True)
    good = np.load(path / "logits" / "000002.npy")
    raw = (path / "logits" / "000002.npy").read_bytes()
    (path / "logits" / "000002.npy").write_bytes(raw[:-10])
    assert tc.open_cache(cfg, teacher, ["logits"], quiet=True)[2]  # rebuilt
    assert np.allclose(np.load(path / "logits" / "000002.npy"), good, atol=1e-2)
    assert not tc.open_cache(cfg, teacher, ["logits"], quiet=True)[2]  # and then reused
