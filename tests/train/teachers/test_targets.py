"""train/teachers/targets.py and python -m train.cache: cached targets equal the online teacher's without
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

import train.teachers.cache_build as cb
import train.teachers.cache_format as cf
import train.teachers.targets as tc
from runtime.errors import UserError
from runtime.io import sha256_file
from train.config import load_config
from train.data import SegmentationTorchDataset, build_readers
from train.distill import main as distill_main
from train.engine.checkpoint import model_from_checkpoint
from train.losses import build_objective, teacher_reads
from train.losses.objective import StepInfo
from train.models import build_model
from train.teachers.geometry import Geometry


def plain(tmp_path: Path, *extra: str):
    """The tiny recipe without augmentation: scale 1, a crop the size of the image, no flip, no jitter."""
    return load_config(tiny_config(tmp_path), ["data.scale_range=[1,1]", "data.flip=false",
                                               "data.color_jitter=0", "data.crop_size=[64,128]", *extra])


def build(tmp_path: Path, cfg, teacher: Path, outputs=("logits", "decoder"), **kw) -> tuple[Path, dict]:
    out = tmp_path / "cache"
    return out, cb.build_cache(teacher, cfg, out, list(outputs), quiet=True, **kw)


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
    again = cf.read_manifest(out)
    assert again == json.loads(json.dumps(manifest))
    assert again["teacher_sha256"] == sha256_file(teacher_path)
    assert again["split"] == "train" and len(again["image_ids"]) == 6
    assert again["dataset"]["dataset"] == "synthetic" and again["dataset"]["synthetic"]["num_train"] == 6
    teacher, _, _ = model_from_checkpoint(teacher_path)
    assert cf.teacher_feature_info(again) == list(teacher.feature_info)
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
        cf.check_cache(out, cf.cache_key(sha256_file(other), cfg, ids), ["logits"])
    resized = plain(tmp_path, "data.val_size=[32,64]")
    with pytest.raises(UserError, match="preprocess"):
        cf.check_cache(out, cf.cache_key(manifest["teacher_sha256"], resized, ids), ["logits"])
    seed = plain(tmp_path, "data.synthetic.seed=3")
    with pytest.raises(UserError, match="dataset"):
        cf.check_cache(out, cf.cache_key(manifest["teacher_sha256"], seed, ids), ["logits"])
    with pytest.raises(UserError, match="image ids"):
        cf.check_cache(out, cf.cache_key(manifest["teacher_sha256"], cfg, ids[:-1]), ["logits"])
    with pytest.raises(UserError, match="also reads stage3"):
        cf.check_cache(out, cf.cache_key(manifest["teacher_sha256"], cfg, ids), ["logits", "stage3"])
    with pytest.raises(UserError, match="another teacher"):  # building into it for another teacher
        cb.build_cache(other, cfg, out, ["logits"], quiet=True)


def test_interrupted_build_resumes_to_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    cfg = plain(tmp_path)
    ref, _ = build(tmp_path / "ref", cfg, teacher_path, batch_size=2)
    calls = {"n": 0}
    real = cb.atomic_write_npy

    def dies_on_the_fifth(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(path, array)

    monkeypatch.setattr(cb, "atomic_write_npy", dies_on_the_fifth)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        cb.build_cache(teacher_path, cfg, out, ["logits", "decoder"], batch_size=2, quiet=True)
    assert not cf.read_manifest(out)["complete"]
    with pytest.raises(UserError, match="incomplete"):
        cf.check_cache(out, cf.cache_key(sha256_file(teacher_path), cfg, cf.read_manifest(out)["image_ids"]),
                       ["logits"])
    kept = sorted(p.name for p in (out / "logits").glob("*.npy"))
    assert 0 < len(kept) < 6 and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(cb, "atomic_write_npy", real)
    saved = {"n": 0}
    monkeypatch.setattr(cb, "atomic_write_npy", lambda p, a: (saved.__setitem__("n", saved["n"] + 1), real(p, a)))
    manifest = cb.build_cache(teacher_path, cfg, out, ["logits", "decoder"], batch_size=2, quiet=True)
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
    assert set(cf.read_manifest(path)["outputs"]) == {"logits", "decoder", "stage4"}


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
    assert cf.verify_files(out, manifest) == [] and len(manifest["image_sizes"]) == 6
    files = [out / "logits" / "000001.npy", out / "decoder" / "000002.npy", out / "logits" / "000003.npy"]
    corrupt(files)
    bad = dict(cf.verify_files(out, manifest))
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


# ----------------------------------------------------------------------------------------------
# Cache modes: multiscale and exact (issue 20, consistent teacher targets)


class ConvTeacher(torch.nn.Module):
    """A stride-1 "teacher": a fixed 3x3 convolution of the normalised image (not mirror-symmetric)."""

    stride = 1
    feature_info: list = []
    arch = {"num_classes": 5}

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.w, self.b = torch.randn(5, 3, 3, 3, generator=g), torch.randn(5, generator=g)

    def forward(self, x: torch.Tensor):
        from train.models.output import SegOutput

        return SegOutput(logits=torch.nn.functional.conv2d(x, self.w, self.b, padding=1), aux=None, features={})


def conv_teacher_file(tmp_path: Path, cfg, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, ConvTeacher]:
    model = ConvTeacher()
    reader, _ = build_readers(cfg.data)
    ckpt = {"arch": {"recipe": "conv3x3"}, "data": reader.data_info().to_dict()}
    monkeypatch.setattr("train.engine.checkpoint.model_from_checkpoint", lambda path, device="cpu": (model, None, ckpt))
    path = tmp_path / "conv.pt"
    path.write_bytes(b"a stride-1 convolution")
    return path, model


def test_default_scales_and_the_nearest_scale_table() -> None:
    assert cf.default_scales((0.5, 2.0)) == [0.5, 0.5946, 0.7071, 0.8409, 1.0, 1.1892, 1.4142, 1.6818, 2.0]
    assert cf.default_scales((1.0, 1.0)) == [1.0] and cf.default_scales((0.75, 1.5)) == [0.75, 0.8919, 1.0607, 1.2613, 1.5]
    grid = [0.5, 1.0, 2.0]
    # nearest in ratio; the larger one when equidistant (sqrt(0.5 * 1) and sqrt(1 * 2) are the midpoints)
    table = {0.3: 0.5, 0.5: 0.5, 0.70: 0.5, 0.5 ** 0.5: 1.0, 0.72: 1.0, 1.0: 1.0, 1.4: 1.0, 2 ** 0.5: 2.0,
             1.45: 2.0, 2.0: 2.0, 3.0: 2.0}
    assert {s: cf.nearest_scale(grid, s) for s in table} == table
    fine = cf.default_scales((0.5, 2.0))
    assert cf.nearest_scale(fine, (1.0 * 1.1892) ** 0.5) == 1.1892 and cf.nearest_scale(fine, 1.09) == 1.0
    # a sample's scale is that of its scaled size: 60 x 120 of a 48 x 96 base is 1.25
    assert cf.sample_scale(Geometry((64, 128), (60, 120), 0, 0, (40, 64), False, (48, 96))) == 1.25


def test_the_key_and_the_auto_folder_differ_by_mode(tmp_path: Path) -> None:
    base = plain(tmp_path)
    keys = {m: cf.cache_key("ab" * 32, plain(tmp_path, f"distill.cache_mode={m}"), ["a", "b"]) for m in cf.MODES}
    assert len({json.dumps(k["mode"], sort_keys=True) for k in keys.values()}) == 3
    assert len({cf.auto_path("c", k) for k in keys.values()}) == 3
    # the single mode keeps the folder it had before modes: the digest of the key without it
    legacy = {f: keys["single"][f] for f in cf.KEY_FIELDS if f not in ("teacher_sha256", "mode")}
    import hashlib
    digest = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:10]
    assert cf.auto_path("c", keys["single"]).name == f"{'ab' * 6}-{digest}"
    assert cf.key_differences({**keys["single"], "mode": None}, keys["single"]) == []  # a manifest from before modes
    assert cf.key_differences(keys["single"], keys["multiscale"]) == ["cache mode (single vs multiscale)"]
    other = cf.cache_key("ab" * 32, plain(tmp_path, "distill.cache_mode=multiscale", "distill.cache_scales=[1,2]"),
                         ["a", "b"])
    assert "multiscale cache (scales" in cf.key_differences(keys["multiscale"], other)[0]
    seed = cf.cache_key("ab" * 32, plain(tmp_path, "distill.cache_mode=exact", "seed=1"), ["a", "b"])
    assert cf.key_differences(keys["exact"], seed) == ["exact cache (seed 0 vs 1)"]
    with pytest.raises(UserError, match="applies to the multiscale and exact"):
        cf.cache_key("ab" * 32, plain(tmp_path, "distill.cache_topk=3"), ["a"])
    assert base.distill.cache_mode == "single"


@pytest.mark.parametrize(("scale", "flip", "top", "left"), [(1.5, True, 7, 30), (0.75, False, -5, 3),
                                                             (1.5, False, 20, -9), (0.75, True, 0, 40)])
def test_multiscale_target_at_a_cached_scale_is_the_teacher_on_the_crop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scale: float, flip: bool, top: int, left: int) -> None:
    """At a cached scale equal to the sample's and its flip, the target is the teacher's output on the
    scaled (mirrored) whole image cropped: for a stride-1 teacher, the teacher on the crop (float16)."""
    from train.data import normalize_tensor
    from train.teachers.geometry import apply_geometry, scaled_size

    cfg = plain(tmp_path, "data.flip=true", "data.scale_range=[0.5,2]", "data.crop_size=[40,64]",
                "distill.cache_mode=multiscale", "distill.cache_scales=[0.75,1.5]")
    teacher, model = conv_teacher_file(tmp_path, cfg, monkeypatch)
    out, manifest = build(tmp_path, cfg, teacher, outputs=("logits",))
    assert manifest["mode"]["scales"] == [0.75, 1.5] and manifest["mode"]["flips"] == [False, True]
    assert sorted(p.name for p in (out / "logits").glob("000002_*")) == [
        "000002_s0.75_m.npy", "000002_s0.75_n.npy", "000002_s1.5_m.npy", "000002_s1.5_n.npy"]
    targets = tc.open_reader(out, manifest, ["logits"])
    reader, _ = build_readers(cfg.data)
    image, label, _ = reader[2]
    image, label = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(label)
    g = Geometry((64, 128), scaled_size((64, 128), scale), top, left, (40, 64), flip, (64, 128))
    assert targets.view(g) == (scale, flip)
    img, lbl = apply_geometry(image, label, g)
    with torch.no_grad():
        online = model(normalize_tensor(img, cfg.data.mean, cfg.data.std)[None]).logits[0]
    inside = torch.nn.functional.max_pool2d((lbl == 255).float()[None, None], 3, 1, 1)[0, 0] == 0
    inside[0], inside[-1], inside[:, 0], inside[:, -1] = False, False, False, False  # the 3x3 saw padding there
    got = targets.warped(2, g)["logits"]
    torch.testing.assert_close(got[:, inside], online[:, inside], atol=1e-2, rtol=2e-3)
    # a sample between the scales reads the nearer one and is close, not equal
    g2 = Geometry((64, 128), scaled_size((64, 128), 1.2), top, left, (40, 64), flip, (64, 128))
    assert targets.view(g2) == (1.5, flip)


def exact_config(tmp_path: Path, *extra: str):
    """The tiny recipe with its augmentation (scale 0.5-2, flip, colour jitter 0.3), an exact cache, 4 steps."""
    return load_config(tiny_config(tmp_path), ["method=lfd", "distill.cache_mode=exact", "budget=4",
                                               "data.color_jitter=0.3", *extra])


def test_samples_a_run_reads() -> None:
    # 6 images, batch 2: 3 batches an epoch; the 4th step is epoch 1's first batch (positions 6, 7)
    assert [cf.samples_for(i, 2, 1, 6) for i in (1, 3, 4, 6, 7)] == [2, 6, 8, 12, 14]
    # 2 processes: 3 images each, 1 batch of 2 an epoch; a step reads positions r, r + 2 of each process r
    assert [cf.samples_for(i, 2, 2, 6) for i in (1, 2)] == [4, 10]
    table = cf.sample_table(6, 0, 8)
    assert sorted(table[:6, 0].tolist()) == list(range(6)) and table[6:, 0].tolist() == table[6:, 0].tolist()
    from train.data import TrainSampler

    second = TrainSampler(6, 0)
    second.set_epoch(1)
    assert [tuple(r) for r in table[6:].tolist()] == list(second)[:2]


def test_exact_targets_are_the_online_teacher_on_the_same_crops(tmp_path: Path) -> None:
    from train.data import TrainSampler

    teacher_path = save_teacher(tmp_path / "teacher.pt")
    cfg = exact_config(tmp_path)
    out, manifest = build(tmp_path, cfg, teacher_path)
    assert manifest["samples"] == 8 and manifest["mode"]["seed"] == 0 and cf.verify_files(out, manifest) == []
    teacher, _, _ = model_from_checkpoint(teacher_path)
    reader, _ = build_readers(cfg.data)
    d = cfg.data
    ds = SegmentationTorchDataset(reader, True, d.crop_size, d.scale_range, d.flip, d.color_jitter, d.mean, d.std,
                                  targets=tc.open_reader(out, manifest, ["logits", "decoder"]))
    keys = []
    for epoch in (0, 1):
        sampler = TrainSampler(len(reader), cfg.train.seed)
        sampler.set_epoch(epoch)
        keys += list(sampler)
    x, _, t = zip(*(ds[k] for k in keys[:8]))
    with torch.no_grad():
        online = teacher(torch.stack(x))
    cached = tc.cached_output(torch.utils.data.default_collate(list(t)), torch.device("cpu"))
    torch.testing.assert_close(cached.logits, online.logits, atol=2e-2, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(cached.features["decoder"], online.features["decoder"], atol=2e-2, rtol=2e-3)
    with pytest.raises(UserError, match="holds the first 8 samples of seed 0 but this run reads a sample beyond"):
        ds[keys[8]]

    # top-k logits: 3 of the classes, int16 ids; arg max and the top-3 softmax as the full cache's
    topk = load_config(tiny_config(tmp_path), ["method=kd", "distill.cache_mode=exact", "budget=4",
                                               "data.color_jitter=0.3", "distill.cache_topk=3"])
    out_k = tmp_path / "topk"
    m_k = cb.build_cache(teacher_path, topk, out_k, ["logits"], quiet=True)
    assert np.load(out_k / "logits" / "000000.indices.npy").dtype == np.int16
    assert np.load(out_k / "logits" / "000000.values.npy").shape[:2] == (8, 3)
    ds.targets = tc.open_reader(out_k, m_k, ["logits"])
    z = torch.stack([ds[k][2]["logits"] for k in keys[:8]])
    assert torch.equal(z.argmax(1), cached.logits.argmax(1))
    p, q = cached.logits.softmax(1), z.softmax(1)
    top = p.topk(3, dim=1)
    torch.testing.assert_close(q.gather(1, top.indices), top.values / top.values.sum(1, keepdim=True),
                               atol=5e-3, rtol=1e-2)


def test_topk_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(2, 10, 4, 5, generator=g)
    values, indices = cf.topk_encode(z, 3)
    assert values.dtype == np.float16 and indices.dtype == np.int16 and values.shape == (2, 3, 4, 5)
    back = cf.topk_decode(values, indices, 10)
    assert torch.equal(back.argmax(1), z.argmax(1))
    kept = torch.zeros_like(z, dtype=torch.bool).scatter_(1, z.topk(3, dim=1).indices, True)
    torch.testing.assert_close(back[kept], z[kept], atol=1e-2, rtol=1e-3)  # float16
    floor = back.masked_fill(kept, float("inf")).amin(1)
    assert torch.allclose(floor, z.topk(3, dim=1).values.amin(1) - cf.TOPK_MARGIN, atol=1e-2)
    p, q = z.softmax(1), back.softmax(1)
    assert float(q.masked_fill(kept, 0).sum(1).max()) < 1e-30  # no mass outside the top-k
    renorm = p.masked_fill(~kept, 0) / p.masked_fill(~kept, 0).sum(1, keepdim=True)
    torch.testing.assert_close(q, renorm, atol=2e-3, rtol=0)
    # at T = 4 the floor still leaves no mass outside (e^(-100/4) of the smallest kept class) and the KL is finite
    p4, log_q4 = (z / 4).softmax(1), (back / 4).log_softmax(1)
    assert float(log_q4.exp().masked_fill(kept, 0).sum(1).max()) < 1e-9
    assert torch.isfinite((p4 * ((z / 4).log_softmax(1) - log_q4)).sum(1)).all()


def test_a_run_reading_more_samples_than_stored_is_refused_or_extended(tmp_path: Path) -> None:
    teacher_path = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "cache"
    small = exact_config(tmp_path, "method=kd", "distill.cache_samples=4", "budget=1")
    m4 = cb.build_cache(teacher_path, small, out, ["logits"], quiet=True)
    assert m4["samples"] == 4  # 1 step reads 2; cache_samples asks for 4
    first = np.load(out / "logits" / "000000.npy")
    run = exact_config(tmp_path, "method=kd", f"distill.teacher_cache={out}", f"teacher={teacher_path}")
    with pytest.raises(UserError, match=r"holds the first 4 samples of seed 0 but this run reads 8 \(") as e:
        tc.open_cache(run, teacher_path, ["logits"])
    assert "\n" not in str(e.value) and "--mode exact --samples 8 and this run's --config" in str(e.value)
    # the loader reads the stored samples in order and refuses the first it lacks (step 3: positions 4, 5)
    from train.data import InfiniteLoader, build_loaders

    targets, _, _ = tc.open_targets(load_config(tiny_config(tmp_path), [
        "distill.cache_mode=exact", "budget=1", "data.color_jitter=0.3", f"distill.teacher_cache={out}"]),
        teacher_path, ["logits"], build=False)
    loader = InfiniteLoader(build_loaders(run, targets=targets)[0])
    next(loader), next(loader)
    with pytest.raises(UserError, match="holds the first 4 samples"):
        next(loader)
    # building for the run extends the cache in place: the partial chunk is rebuilt with 8 rows
    m8 = cb.build_cache(teacher_path, run, out, ["logits"], quiet=True)
    assert m8["samples"] == 8 and np.load(out / "samples.npy").shape == (8, 2)
    assert np.allclose(np.load(out / "logits" / "000000.npy")[:4], first, atol=1e-2)
    tc.open_cache(run, teacher_path, ["logits"])


@pytest.mark.parametrize("mode", cf.MODES)
def test_verify_catches_a_truncated_file_in_each_mode(tmp_path: Path, mode: str) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    cfg = exact_config(tmp_path, f"distill.cache_mode={mode}", "distill.cache_scales=[0.5,1]", "method=kd",
                       "distill.teacher_cache=auto", f"teacher={teacher}")
    path, manifest, built = tc.open_cache(cfg, teacher, ["logits"], quiet=True)
    assert built and cf.verify_files(path, manifest) == []
    files = sorted((path / "logits").glob("*.npy"))
    assert len(files) == {"single": 6, "multiscale": 6 * 2 * 2, "exact": 1}[mode]
    victim = files[len(files) // 2]
    victim.write_bytes(victim.read_bytes()[:-10])
    bad = cf.verify_files(path, manifest)
    assert [f for f, _ in bad] == [victim] and "bytes" in bad[0][1]
    assert tc.open_cache(cfg, teacher, ["logits"], quiet=True)[2]  # auto repairs it
    assert cf.verify_files(path, manifest) == []


def test_distill_trains_from_exact_and_multiscale_caches(tmp_path: Path) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    config = str(tiny_config(tmp_path))
    for mode in ("exact", "multiscale"):
        assert distill_main(["--config", config, "method=kd", f"teacher={teacher}", "budget=2", f"name={mode}",
                             "distill.teacher_cache=auto", f"distill.cache_mode={mode}",
                             "distill.cache_scales=[0.5,1]"]) == 0
        rec = json.loads((tmp_path / "runs" / mode / "results.json").read_text())["teacher_cache"]
        assert rec["mode"] == mode and rec["built_by_this_run"]
        assert rec.get("samples") == (4 if mode == "exact" else None)


def test_cache_cli_compares_every_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.cache import main as cache_main

    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "modes"
    assert cache_main(["--teacher", str(teacher), "--config", str(tiny_config(tmp_path)), "--out", str(out),
                       "--mode", "all", "--check", "3", "--outputs", "logits", "distill.cache_scales=[0.5,1]"]) == 0
    text = capsys.readouterr().out
    assert "agree (as trained)" in text and all(m in text for m in cf.MODES)
    rows = {r["mode"]: r for r in json.loads((out / "agreement-modes.json").read_text())["rows"]}
    assert rows["exact"]["agree_as_trained"] == 100.0 and rows["exact"]["kl_as_trained"] < 1e-4
    assert rows["multiscale"]["size_mb"] > rows["single"]["size_mb"]
    assert rows["multiscale"]["views"] == 6 * 2 * 2 and rows["exact"]["views"] == 1


def test_a_probed_run_longer_than_its_exact_cache_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    """A wall-clock budget resolved by the probe after the exact cache was opened: a count that reads more
    crops than stored is one sentence with the command that extends the cache, before any training."""
    teacher = save_teacher(tmp_path / "teacher.pt")
    rc = distill_main(["--config", str(tiny_config(tmp_path)), "method=kd", f"teacher={teacher}", "budget=60s",
                       "train.budget_mode=probe", "train.probe_warmup=1", "train.probe_steps=1", "name=short",
                       "distill.teacher_cache=auto", "distill.cache_mode=exact", "distill.cache_samples=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds the first 8 samples" in err and "--mode exact --samples" in err
    assert not (tmp_path / "runs" / "short" / "results.json").exists()
