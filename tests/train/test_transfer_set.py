"""Transfer set (data.unlabeled): MixedSampler's batches and footage epochs, mixed loaders, the objective's
split (no task loss on frames, per-part method terms, pseudo-labels, LFD without labels), the checks of
train.distill, the footage teacher cache, end-to-end runs with and without a cache, exact resume, and the
comparison's student-alone runs without the frames."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from test_distill import tiny_config
from test_fkd_layers import save_teacher

from runtime.errors import UserError
from train.config import DistillConfig, LFDConfig, load_config
from train.data import (
    MixedSampler,
    TrainSampler,
    build_footage_reader,
    build_loaders,
    unlabeled_per_batch,
)
from train.losses import Combined, TaskLoss, build_objective
from train.losses.kd import KD, kd_loss
from train.losses.lfd import LFD
from train.losses.objective import StepInfo
from train.losses.pseudo import pseudo_label_loss
from train.losses.task import seg_cross_entropy
from train.models.output import FeatureInfo, SegOutput

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; threads only add barrier stalls

K = 3
FRAMES = "data.unlabeled=[synthetic:8]"


def footage_config(tmp_path: Path, unlabeled: list[str] | None = None) -> Path:
    """tiny_config with `data.unlabeled` in the recipe itself (default: 8 synthetic frames)."""
    path = tiny_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["unlabeled"] = unlabeled if unlabeled is not None else ["synthetic:8"]
    out = tmp_path / "tiny-footage.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


# ----------------------------------------------------------------------------------------------
# 1. MixedSampler


def batches(keys: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    assert len(keys) % size == 0
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def epochs(sampler: MixedSampler, n: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for e in range(n):
        sampler.set_epoch(e)
        out += list(sampler)
    return out


def test_mixed_sampler_batches_labeled_keys_then_frames_with_the_labeled_order_unchanged():
    ms = MixedSampler(10, 7, 2, 3, seed=5)
    assert ms.batches_per_epoch == 5 and len(ms) == 25
    for epoch in range(3):
        ms.set_epoch(epoch)
        keys = list(ms)
        assert len(keys) == 25
        base = TrainSampler(10, 5)
        base.set_epoch(epoch)
        labeled = []
        for b in batches(keys, 5):
            assert all(k < 10 for k, _ in b[:2]) and all(10 <= k < 17 for k, _ in b[2:])
            labeled += b[:2]
        assert labeled == list(base)  # the same (key, augmentation seed) pairs, cut into batches of 2


def test_mixed_sampler_shows_every_frame_once_per_footage_epoch():
    ms = MixedSampler(10, 7, 2, 3, seed=5)
    frames = [kv for b in batches(epochs(ms, 3), 5) for kv in b[2:]]  # 45 frame positions
    assert len(frames) == 45
    for start in range(0, 42, 7):  # 6 complete footage epochs
        block = frames[start:start + 7]
        assert sorted(k for k, _ in block) == list(range(10, 17)), start
    # the footage epochs are differently shuffled (not one permutation repeated), with fresh seeds
    orders = {tuple(k for k, _ in frames[s:s + 7]) for s in range(0, 42, 7)}
    assert len(orders) > 1
    assert len({s for _, s in frames}) == 45
    # frames() is what the iteration yields
    assert frames[:3] == ms.frames(0) and frames[12:15] == ms.frames(4) and frames[15:18] == ms.frames(5)


def test_mixed_sampler_is_a_function_of_the_seed():
    a = epochs(MixedSampler(10, 7, 2, 3, seed=5), 2)
    assert a == epochs(MixedSampler(10, 7, 2, 3, seed=5), 2)
    other = epochs(MixedSampler(10, 7, 2, 3, seed=6), 2)
    assert a != other
    frames = [kv for b in batches(a, 5) for kv in b[2:]]
    frames_other = [kv for b in batches(other, 5) for kv in b[2:]]
    assert frames != frames_other  # the frame stream depends on the seed too, not only the labeled part


def test_mixed_sampler_skip_resumes_exactly_also_in_a_later_epoch():
    ms = MixedSampler(10, 7, 2, 3, seed=5)
    full0 = list(ms)
    ms.skip(2 * 5)
    assert list(ms) == full0[10:]
    assert list(ms) == full0  # the skip is used once
    ms.set_epoch(1)
    full1 = list(ms)
    assert full1 != full0
    ms.set_epoch(1)
    ms.skip(3 * 5)
    tail = list(ms)
    assert tail == full1[15:]
    # the skipped frames' positions are not re-used: the tail's frames are those of global batches 8, 9
    assert [kv for b in batches(tail, 5) for kv in b[2:]] == ms.frames(8) + ms.frames(9)


def test_mixed_sampler_ranks_get_disjoint_frame_positions_of_one_stream():
    seed = 3
    ranks = [MixedSampler(10, 7, 2, 3, seed=seed, rank=r, world=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 2  # 5 labeled samples per rank, 2 batches of 2
    single = MixedSampler(10, 7, 2, 3, seed=seed)
    per_rank = [batches(epochs(r, 3), 5) for r in ranks]  # 6 batches each
    for r in range(2):
        for e in range(3):
            base = TrainSampler(10, seed, r, 2)
            base.set_epoch(e)
            want = list(base)[:4]
            got = [kv for b in per_rank[r][2 * e:2 * e + 2] for kv in b[:2]]
            assert got == want
    # global batch g: rank 0's frames then rank 1's are positions 6g .. 6g+5 of the one frame stream
    interleaved = [kv for g in range(6) for r in range(2) for kv in per_rank[r][g][2:]]
    stream = [kv for g in range(12) for kv in single.frames(g)]
    assert interleaved == stream
    first_epoch = interleaved[:7]  # the two ranks together see each frame once per footage epoch
    assert sorted(k for k, _ in first_epoch) == list(range(10, 17))


# ----------------------------------------------------------------------------------------------
# 2. Mixed loaders


def test_build_loaders_mixed_batches_and_the_labeled_part_is_unchanged(tmp_path):
    cfg = load_config(str(tiny_config(tmp_path)), [FRAMES, "data.unlabeled_ratio=1.5"])
    assert unlabeled_per_batch(cfg.data) == 3
    train_loader, _, info = build_loaders(cfg)
    x, y = next(iter(train_loader))[:2]
    assert x.shape == (5, 3, 64, 128) and y.shape == (5, 64, 128)
    assert bool((y[2:] == 255).all())
    assert all(not bool((y[i] == 255).all()) for i in range(2))
    # the labeled samples are those of the same run without a transfer set, bit for bit
    plain = load_config(str(tiny_config(tmp_path)), [])
    px, py = next(iter(build_loaders(plain)[0]))[:2]
    torch.testing.assert_close(x[:2], px, rtol=0, atol=0)
    assert torch.equal(y[:2], py)
    assert info.num_classes == build_loaders(plain)[2].num_classes


@pytest.mark.parametrize(("ratio", "batch", "want"), [(1.0, 2, 2), (1.5, 2, 3), (0.1, 2, 1), (0.5, 4, 2),
                                                      (3.0, 2, 6)])
def test_unlabeled_per_batch_rounds_and_keeps_at_least_one(tmp_path, ratio, batch, want):
    cfg = load_config(None, [FRAMES, f"data.unlabeled_ratio={ratio}", f"data.batch_size={batch}"])
    assert unlabeled_per_batch(cfg.data) == want
    assert unlabeled_per_batch(load_config(None, [f"data.unlabeled_ratio={ratio}"]).data) == 0  # no transfer set


def test_a_zero_unlabeled_ratio_is_refused():
    with pytest.raises(UserError, match="unlabeled_ratio"):
        load_config(None, [FRAMES, "data.unlabeled_ratio=0"])


# ----------------------------------------------------------------------------------------------
# 3. The objective's split


def seg_outputs(batch: int, seed: int = 0) -> tuple[SegOutput, SegOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = SegOutput(torch.randn(batch, K, 4, 8, generator=g).requires_grad_(True))
    t = SegOutput(torch.randn(batch, K, 4, 8, generator=g))
    labels = torch.randint(0, K, (batch, 8, 16), generator=g)  # every sample, frames too, has real class ids
    return s, t, labels


@pytest.mark.parametrize("batch", [4, 5])
def test_no_cross_entropy_on_the_unlabeled_part_and_kd_on_both(batch):
    s, t, labels = seg_outputs(batch)
    obj = Combined(TaskLoss(), {"kd": KD()})
    terms = obj(s, t, labels, StepInfo(0, 0.0, labeled=2))
    assert set(terms) == {"ce", "kd"}
    # ce: the labeled samples only, whatever labels the frames carry
    assert terms["ce"].item() == pytest.approx(seg_cross_entropy(s.logits[:2], labels[:2]).item(), rel=1e-6)
    terms["ce"].backward(retain_graph=True)
    grad = s.logits.grad
    assert grad is not None
    assert bool((grad[2:] == 0).all()) and bool((grad[:2].abs().sum((1, 2, 3)) > 0).all())
    # kd: the sample-weighted mean of the parts = the per-pixel mean over the whole batch
    assert terms["kd"].item() == pytest.approx(kd_loss(s.logits, t.logits, 1.0).item(), rel=1e-5)
    assert set(obj.last_parts) == {"labeled.kd", "unlabeled.kd"}
    assert obj.last_parts["labeled.kd"].item() == pytest.approx(kd_loss(s.logits[:2], t.logits[:2], 1.0).item(),
                                                                rel=1e-5)
    assert obj.last_parts["unlabeled.kd"].item() == pytest.approx(kd_loss(s.logits[2:], t.logits[2:], 1.0).item(),
                                                                  rel=1e-5)
    s.logits.grad = None
    terms["kd"].backward()
    assert bool((s.logits.grad.abs().sum((1, 2, 3)) > 0).all())  # kd reaches every sample

    # sanity: without the split (labeled=None, or every sample labeled) ce covers the whole batch
    for labeled in (None, batch):
        plain = obj(s, t, labels, StepInfo(0, 0.0, labeled=labeled))
        assert plain["ce"].item() == pytest.approx(seg_cross_entropy(s.logits, labels).item(), rel=1e-6)
        assert plain["ce"].item() != pytest.approx(terms["ce"].item(), rel=1e-3)
        assert obj.last_parts == {}


def test_a_batch_without_labeled_samples_or_a_split_without_methods_is_refused():
    s, t, labels = seg_outputs(4)
    with pytest.raises(ValueError, match="at least one labeled"):
        Combined(TaskLoss(), {"kd": KD()})(s, t, labels, StepInfo(0, 0.0, labeled=0))
    with pytest.raises(UserError, match="teacher"):
        Combined(TaskLoss(), {})(s, t, labels, StepInfo(0, 0.0, labeled=2))


def test_pseudo_labels_by_hand():
    # pixel 0: the teacher is sure of class 0 (softmax 0.9526 >= 0.9), kept; pixel 1: 0.6225 < 0.9, dropped
    z_t = torch.tensor([[3.0, 0.5], [0.0, 0.0]]).view(1, 2, 1, 2)
    z_s = torch.tensor([[0.0, 2.0], [1.0, 0.0]]).view(1, 2, 1, 2)
    loss, kept = pseudo_label_loss(z_s, z_t, 0.9)
    assert loss.item() == pytest.approx(math.log(1 + math.e) / 2, rel=1e-6)  # CE(z_S,0, class 0) / N, N = 2
    assert kept.item() == 0.5
    loss_all, kept_all = pseudo_label_loss(z_s, z_t, 0.5)  # both kept: pixel 1's target is class 0 too
    assert kept_all.item() == 1.0
    assert loss_all.item() == pytest.approx((math.log(1 + math.e) + math.log(1 + math.exp(-2.0))) / 2, rel=1e-6)


def test_the_pseudo_term_is_on_the_frames_only():
    s, t, labels = seg_outputs(4, seed=1)
    t.logits.mul_(4.0)  # a confident teacher: some pixels above the threshold, some below
    obj = Combined(TaskLoss(), {"kd": KD()}, pseudo=(0.9, 2.0))
    terms = obj(s, t, labels, StepInfo(0, 0.0, labeled=2))
    loss, kept = pseudo_label_loss(s.logits[2:], t.logits[2:], 0.9)
    assert 0 < kept.item() < 1
    assert terms["pseudo"].item() == pytest.approx(2.0 * loss.item(), rel=1e-6)
    assert obj.last_parts["unlabeled.pseudo_kept"].item() == pytest.approx(kept.item())
    terms["pseudo"].backward()
    assert bool((s.logits.grad[:2] == 0).all()) and s.logits.grad[2:].abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# 4. LFD without labels

S_INFO = [FeatureInfo("stage2", 4, 8), FeatureInfo("stage3", 5, 8), FeatureInfo("decoder", 6, 8)]
T_INFO = [FeatureInfo("decoder", 8, 8)]


def lfd_outputs(batch: int, seed: int = 0) -> tuple[SegOutput, SegOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, grad: bool = True) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    s = SegOutput(r(batch, K, 4, 4), features={"decoder": r(batch, 6, 4, 4), "stage2": r(batch, 4, 4, 4),
                                               "stage3": r(batch, 5, 4, 4)})
    t = SegOutput(r(batch, K, 4, 4, grad=False), features={"decoder": r(batch, 8, 4, 4, grad=False)})
    y = torch.randint(0, K, (batch, 16, 16), generator=g)
    y[0, :8] = 255
    return s, t, y


def test_lfd_on_frames_distils_every_pixel_and_has_no_shared_head_ce():
    torch.manual_seed(0)
    cfg = DistillConfig(method="lfd", lfd=LFDConfig(kl_start=0))
    obj = build_objective(cfg, S_INFO, T_INFO, K, budget_is_time=False)
    s, t, y = lfd_outputs(4)
    terms = obj(s, t, y, StepInfo(0, 0.0, labeled=2))
    assert {"task", "fea", "aux", "shared_H", "shared", "kl"} <= set(terms)
    parts = obj.last_parts
    assert parts["unlabeled.shared_H"].item() == 0.0
    assert parts["labeled.shared_H"].item() > 0
    # a term that needs labels keeps its labeled value: frames do not dilute the shared head's CE
    assert terms["shared_H"].item() == pytest.approx(parts["labeled.shared_H"].item())
    for side in ("labeled", "unlabeled"):
        fea = parts[f"{side}.fea"].item()  # logged before self-normalisation
        assert math.isfinite(fea) and fea > 0
        assert math.isfinite(parts[f"{side}.kl"].item()) and parts[f"{side}.kl"].item() > 0
    assert all(torch.isfinite(v).all() for v in terms.values())
    sum(terms.values()).backward()
    assert s.features["decoder"].grad[2:].abs().sum() > 0  # the frames' features are distilled


def test_lfd_without_labels_equals_lfd_with_every_pixel_valid_except_the_shared_head_ce():
    lfd = LFD(LFDConfig(kl_start=0, self_normalize=False),
              {"decoder": 6, "stage2": 4, "stage3": 5}, {"decoder": 8}, K).eval()
    s, t, _ = lfd_outputs(2, seed=2)
    none = lfd(s, t, None, StepInfo(0, 0.0))
    all_valid = lfd(s, t, torch.zeros(2, 16, 16, dtype=torch.long), StepInfo(0, 0.0))
    assert none["shared_H"].item() == 0.0 and all_valid["shared_H"].item() > 0
    for k in ("fea", "aux", "shared", "kl"):
        assert none[k].item() == pytest.approx(all_valid[k].item(), rel=1e-6), k
        assert math.isfinite(none[k].item()) and none[k].item() > 0, k
    if none["shared_H"].requires_grad:
        none["shared_H"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in lfd.shared_head.parameters())


# ----------------------------------------------------------------------------------------------
# 5. Checks


def test_check_transfer_set_and_build_objective_refusals(tmp_path):
    from train.distill import check_transfer_set

    config = str(tiny_config(tmp_path))
    with pytest.raises(UserError, match="teacher"):
        check_transfer_set(load_config(config, ["method=baseline", FRAMES]))
    with pytest.raises(UserError, match="data.unlabeled"):
        check_transfer_set(load_config(config, ["method=kd", "distill.pseudo_labels=true"]))
    check_transfer_set(load_config(config, ["method=kd", FRAMES, "distill.pseudo_labels=true"]))  # fine
    check_transfer_set(load_config(config, ["method=baseline"]))  # fine
    with pytest.raises(UserError, match="pseudo_labels"):
        build_objective(DistillConfig(method="baseline", pseudo_labels=True), S_INFO, None, K, False)


# ----------------------------------------------------------------------------------------------
# 6. The footage teacher cache


def test_footage_cache_manifest_refusals_and_exact_mode(tmp_path, capsys):
    from train.cache import main as cache_main
    from train.distill import footage_cache_config
    from train.teachers.cache_build import build_cache
    from train.teachers.cache_format import mode_of
    from train.teachers.targets import open_cache

    teacher = save_teacher(tmp_path / "teacher.pt")
    config = str(tiny_config(tmp_path))
    # python -m train.cache builds the transfer set's cache beside the labeled one, where distill finds it
    assert cache_main(["--teacher", str(teacher), "--config", config, "method=kd", FRAMES]) == 0
    assert "footage teacher cache" in capsys.readouterr().out
    cfg = load_config(config, ["method=kd", FRAMES])
    path, manifest, built = open_cache(cfg, teacher, ["logits"], build=True, footage=True, quiet=True)
    assert not built and path.parent == tmp_path / "caches"
    labeled, _, _ = open_cache(load_config(config, ["method=kd", FRAMES, "distill.teacher_cache=auto"]), teacher,
                               ["logits"], build=False)
    assert labeled != path and labeled.parent == path.parent
    assert manifest["split"] == "footage" and manifest["complete"]
    ids = build_footage_reader(cfg.data).frame_ids()
    assert manifest["image_ids"] == ids == [f"synthetic:footage:{i}" for i in range(8)]
    assert manifest["dataset"]["footage"]["sources"] == ["synthetic:8"]
    again, _, built_again = open_cache(cfg, teacher, ["logits"], build=True, footage=True, quiet=True)
    assert again == path and not built_again

    # another transfer set, given this folder: refused, naming the frames
    other = load_config(config, ["method=kd", "data.unlabeled=[synthetic:6]", f"distill.footage_cache={path}"])
    with pytest.raises(UserError, match=r"image ids \(8 images vs 6\)") as e:
        open_cache(other, teacher, ["logits"], build=False, footage=True)
    assert "synthetic:6" in str(e.value) and str(path) in str(e.value)
    # another teacher: refused
    teacher2 = save_teacher(tmp_path / "teacher2.pt", recipe="tiny_lraspp_mobilenetv3")
    same = load_config(config, ["method=kd", FRAMES, f"distill.footage_cache={path}"])
    open_cache(same, teacher, ["logits"], build=False, footage=True)  # the right one is accepted
    with pytest.raises(UserError, match=r"teacher \(sha256"):
        open_cache(same, teacher2, ["logits"], build=False, footage=True)
    # the footage cache is not a cache of the labeled split
    as_labeled = load_config(config, ["method=kd", FRAMES, f"distill.teacher_cache={path}"])
    with pytest.raises(UserError, match=r"split \(\"footage\" vs \"train\"\)"):
        open_cache(as_labeled, teacher, ["logits"], build=False)

    # exact mode: the frames are cached in the single mode (the exact cache holds the labeled crops)
    exact = load_config(config, ["method=kd", FRAMES, "distill.cache_mode=exact", "distill.cache_topk=2"])
    fcfg = footage_cache_config(exact)
    assert fcfg is not None and fcfg is not exact
    assert fcfg.distill.cache_mode == "single" and fcfg.distill.cache_topk == 0
    assert exact.distill.cache_mode == "exact" and exact.distill.cache_topk == 2  # the run's config untouched
    f_path, f_manifest, _ = open_cache(fcfg, teacher, ["logits"], build=True, footage=True, quiet=True)
    assert mode_of(f_manifest)["name"] == "single" and f_manifest["split"] == "footage"
    assert f_path == path  # the same frames, teacher and mode: the same cache
    assert footage_cache_config(cfg) is cfg
    assert footage_cache_config(load_config(config, ["method=kd"])) is None
    with pytest.raises(UserError, match="single or multiscale"):
        build_cache(teacher, exact, tmp_path / "x", ["logits"], quiet=True, footage=True)


def test_a_refused_footage_cache_names_the_footage_option(tmp_path):
    from train.teachers.targets import open_cache

    teacher = save_teacher(tmp_path / "teacher.pt")
    config = str(tiny_config(tmp_path))
    path, _, _ = open_cache(load_config(config, ["method=kd", FRAMES]), teacher, ["logits"], build=True,
                            footage=True, quiet=True)
    other = load_config(config, ["method=kd", "data.unlabeled=[synthetic:6]", f"distill.footage_cache={path}",
                                 "distill.teacher_cache=auto"])  # the advice already followed
    with pytest.raises(UserError) as e:
        open_cache(other, teacher, ["logits"], build=False, footage=True)
    advice = str(e.value).replace(str(tmp_path), "")  # (the folder's name holds this test's name)
    assert "distill.teacher_cache=auto" not in advice and "distill.footage_cache" in advice


# ----------------------------------------------------------------------------------------------
# 7. End to end


def train_lines(run: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in ln.items() if k not in ("elapsed", "s_per_iter")} for ln in lines]


@pytest.mark.parametrize("cache", ["off", "auto"])
def test_distill_with_a_transfer_set_end_to_end(tmp_path, cache):
    from train.distill import main

    teacher = save_teacher(tmp_path / "teacher.pt")
    rc = main(["--config", str(tiny_config(tmp_path)), "method=kd", f"teacher={teacher}", "budget=2",
               "data.unlabeled=synthetic:8", f"distill.teacher_cache={cache}"])
    assert rc == 0
    run = tmp_path / "runs" / "tiny-kd-s0"
    results = json.loads((run / "results.json").read_text())
    assert results["iterations"] == 2
    train = [ln for ln in train_lines(run) if ln["kind"] == "train"]
    assert [ln["iteration"] for ln in train] == [1, 2]
    for ln in train:
        assert {"labeled.kd", "unlabeled.kd", "kd", "ce"} <= set(ln), ln
        assert all(math.isfinite(ln[k]) for k in ("labeled.kd", "unlabeled.kd", "kd"))
    assert "footage" in results["skipped_samples"] and results["skipped_samples"]["footage"] == []
    if cache == "off":
        assert results["teacher_cache"] is None
    else:
        record = results["teacher_cache"]["footage"]
        assert Path(record["path"]).is_dir() and Path(record["path"]) != Path(results["teacher_cache"]["path"])
        manifest = json.loads((Path(record["path"]) / "manifest.json").read_text())
        assert manifest["split"] == "footage" and len(manifest["image_ids"]) == 8


def test_distill_baseline_with_a_transfer_set_is_refused(tmp_path, capsys):
    from train.distill import main

    assert main(["--config", str(tiny_config(tmp_path)), "method=baseline", "budget=2",
                 "data.unlabeled=synthetic:8"]) == 2
    err = capsys.readouterr().err
    assert "data.unlabeled was given with method=baseline" in err and "teacher" in err
    assert not list((tmp_path / "runs").glob("*/config.yaml"))  # refused before the run started


# ----------------------------------------------------------------------------------------------
# 8. Resume


def test_resume_with_a_transfer_set_gives_the_same_losses(tmp_path, monkeypatch):
    from train.distill import main

    teacher = save_teacher(tmp_path / "teacher.pt")
    config = str(tiny_config(tmp_path))

    def run(root: Path) -> int:
        # 6 labeled images, batch 2: 3 batches an epoch, so the resumed part crosses an epoch
        return main(["--config", config, "method=kd", f"teacher={teacher}", "budget=5", FRAMES,
                     "data.unlabeled_ratio=1.5", "train.ckpt_every=2", f"train.runs_dir={root}"])

    assert run(tmp_path / "a") == 0
    forward = Combined.forward

    def crash(self, s, t, labels, step):
        if step.iteration == 3:
            raise RuntimeError("simulated crash")
        return forward(self, s, t, labels, step)

    with monkeypatch.context() as m:
        m.setattr(Combined, "forward", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(tmp_path / "b")
    assert run(tmp_path / "b") == 0
    results = json.loads((tmp_path / "b/tiny-kd-s0/results.json").read_text())
    assert results["resumed_from"] == 2 and results["iterations"] == 5
    a, b = train_lines(tmp_path / "a/tiny-kd-s0"), train_lines(tmp_path / "b/tiny-kd-s0")
    assert [ln["iteration"] for ln in b if ln["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert "unlabeled.kd" in a[0]
    assert a == b  # every loss term and part, bit for bit


# ----------------------------------------------------------------------------------------------
# 9. Comparison


def test_compare_runs_the_student_alone_without_the_frames(tmp_path):
    from train.compare.run import run_overrides

    for config, extra in ((str(footage_config(tmp_path)), []), (str(tiny_config(tmp_path)), [FRAMES])):
        base = run_overrides(config, "baseline", 0, "2", None, tmp_path / "out", "1", extra)
        assert "data.unlabeled=[]" in base and "distill.pseudo_labels=false" in base
        assert load_config(config, base).data.unlabeled == []
        for method in ("kd", "lfd"):
            keys = run_overrides(config, method, 0, "2", "t.pt", tmp_path / "out", "1", extra)
            assert "data.unlabeled=[]" not in keys
            assert load_config(config, keys).data.unlabeled == ["synthetic:8"]
    # without a transfer set nothing is added
    plain = run_overrides(str(tiny_config(tmp_path)), "baseline", 0, "2", None, tmp_path / "out", "1", [])
    assert not any(k.startswith("data.unlabeled") for k in plain)
