"""train.fkd_layers: the CLI's table, JSON and FKD snippet on a tiny teacher; uniform pixel sampling; stage
matching by stride."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from runtime.datasets.synthetic import SyntheticStreets
from train.config import ModelConfig, load_config
from train.engine.checkpoint import save_checkpoint
from train.fkd_layers import PixelReservoir, main, match_student_stage, pixels, top_pairs
from train.models import build_model
from train.models.output import FeatureInfo

SYN = {"num_train": 6, "num_val": 2, "size": [64, 128], "seed": 0, "cache": False}


def save_teacher(path: Path, recipe: str = "tiny_pspnet_resnet10t", classes: list[str] | None = None) -> Path:
    """A random tiny teacher checkpoint whose config records tiny synthetic data."""
    ds = SyntheticStreets(split="train", num_train=2, num_val=1, size=(64, 128), cache=False)
    info = ds.data_info((64, 128))
    if classes is not None:
        info.classes, info.palette = classes, info.palette[:len(classes)]
    torch.manual_seed(0)
    model = build_model(ModelConfig(recipe=recipe), info.num_classes)
    config = {"data": {"dataset": "synthetic", "synthetic": SYN}}
    save_checkpoint(path, model, info, {"method": "teacher", "best_miou": 0.42, "config": config})
    return path


def test_layers_cli_table_json_and_snippet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "fkd.yaml"
    rc = main(["--teacher", str(teacher), "--images", "4", "--per-class", "20", "--batch", "4", "--top-k", "2",
               "--student-recipe", "tiny_lraspp_mobilenetv3", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    layers = report["layers"]
    assert [r["layer"] for r in layers] == ["stage0", "stage1", "stage2", "stage3", "stage4", "decoder"]
    assert [r["stride"] for r in layers] == [2, 4, 8, 8, 8, 8]
    assert sorted(r["rank"] for r in layers) == list(range(1, 7))
    by_rank = sorted(layers, key=lambda r: r["rank"])
    assert all(a["Q"] >= b["Q"] for a, b in zip(by_rank, by_rank[1:]))
    for r in layers:
        assert r["Q"] == pytest.approx(r["S"] + math.sqrt(r["I"] * r["E"]), rel=1e-6)
        assert r["n"] <= 16 * 20
    assert report["images"] == 4
    # the top-2 teacher layers by Q, always; each with its closest-stride free student stage
    student = [FeatureInfo(f["name"], f["width"], f["stride"]) for f in report["student_stages"]]
    assert [t for _, t in report["pairs"]] == [r["layer"] for r in by_rank[:2]]
    assert report["pairs"] == top_pairs(by_rank, student, 2)
    assert len({s for s, _ in report["pairs"]}) == 2  # two layers, two different student stages
    assert [r["paired_with"] for r in by_rank[:2]] == [s for s, _ in report["pairs"]]
    cfg = load_config(out)  # the snippet is a valid config file
    assert cfg.distill.method == "fkd" and cfg.distill.fkd.pairs == report["pairs"]
    printed = capsys.readouterr().out
    for r in layers:
        assert r["layer"] in printed
    assert "rank" in printed and str(out) in printed


def test_layers_missing_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--teacher", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_match_student_stage_by_stride() -> None:
    os8 = [FeatureInfo("stage0", 8, 2), FeatureInfo("stage1", 8, 4), FeatureInfo("stage2", 8, 8),
           FeatureInfo("stage3", 8, 8), FeatureInfo("stage4", 8, 8), FeatureInfo("decoder", 8, 8)]
    assert match_student_stage(8, os8) == "stage4"  # several at stride 8: the deepest, never the decoder
    assert match_student_stage(4, os8) == "stage1"
    assert match_student_stage(2, os8) == "stage0"
    assert match_student_stage(16, os8) == "stage4"  # coarser than every student stage: the closest
    os16 = [FeatureInfo("stage1", 8, 4), FeatureInfo("stage2", 8, 8), FeatureInfo("stage3", 8, 16),
            FeatureInfo("stage4", 8, 16)]
    assert match_student_stage(8, os16) == "stage2"
    assert match_student_stage(16, os16) == "stage4"
    assert match_student_stage(2, os16) == "stage1"  # finer than every student stage


def test_top_pairs_keeps_the_top_ranked_layers_even_when_coarser_than_the_student() -> None:
    """The issue's case: an OS16 teacher ranked stage4, stage3, decoder, ...; an OS8 student (DeepLabV3-R18)."""
    os8 = [FeatureInfo("stage0", 64, 2), FeatureInfo("stage1", 64, 4), FeatureInfo("stage2", 128, 8),
           FeatureInfo("stage3", 256, 8), FeatureInfo("stage4", 512, 8), FeatureInfo("decoder", 256, 8)]
    rows = [{"layer": "stage4", "stride": 16, "rank": 1}, {"layer": "stage3", "stride": 16, "rank": 2},
            {"layer": "decoder", "stride": 16, "rank": 3}, {"layer": "stage0", "stride": 2, "rank": 4}]
    notes: list[str] = []
    pairs = top_pairs(rows, os8, 2, notes)
    # both top layers kept; the second would also take student stage4, so it takes the next (stage3)
    assert pairs == [["stage4", "stage4"], ["stage3", "stage3"]]
    assert len(notes) == 1 and "teacher stage3" in notes[0] and "already paired with teacher stage4" in notes[0]
    assert top_pairs(rows, os8, 3)[2] == ["stage2", "decoder"]


def test_fkd_loss_pools_the_finer_map_on_either_side() -> None:
    from train.losses.fkd import fkd_pair_loss

    torch.manual_seed(0)
    fine, coarse = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    pooled = F.avg_pool2d(fine, 2)  # adaptive pooling 8 -> 4 is a 2 x 2 average
    expected = (pooled - coarse).pow(2).mean()
    assert fkd_pair_loss(fine, coarse).item() == pytest.approx(expected.item(), rel=1e-6)  # student finer
    assert fkd_pair_loss(coarse, fine).item() == pytest.approx(expected.item(), rel=1e-6)  # teacher finer
    same = torch.randn(2, 3, 4, 4)
    assert fkd_pair_loss(same, coarse).item() == pytest.approx((same - coarse).pow(2).mean().item(), rel=1e-6)


def test_pixels_downsamples_labels_and_drops_ignored() -> None:
    feats = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 2, 2], [255, 255, 2, 2]]).repeat(2, 1, 1)
    x, y = pixels(feats, labels, 255)
    assert y.tolist() == [0, 1, 2, 0, 1, 2]  # pixel (1, 0) of each image is ignored
    assert x[0].tolist() == feats[0, :, 0, 0].tolist() and x[5].tolist() == feats[1, :, 1, 1].tolist()


def test_reservoir_is_uniform_over_batches() -> None:
    # 100 pixels of batch A (value 0) then 900 of batch B (value 1), 50 kept: a uniform sample holds
    # 10 % from A on average; capping the union batch by batch would keep ~50 %.
    gen = torch.Generator().manual_seed(0)
    shares = []
    for _ in range(200):
        r = PixelReservoir(50, gen)
        r.add(torch.zeros(100, 2), torch.zeros(100, dtype=torch.long))
        r.add(torch.ones(900, 2), torch.zeros(900, dtype=torch.long))
        r.add(torch.full((30, 2), 5.0), torch.ones(30, dtype=torch.long))
        x, y = r.samples()
        assert (y == 0).sum() == 50 and (y == 1).sum() == 30  # capped per class; small classes kept whole
        assert torch.all(x[y == 1] == 5.0)
        shares.append(float((x[y == 0, 0] == 0).float().mean()))
    assert sum(shares) / len(shares) == pytest.approx(0.1, abs=0.015)
