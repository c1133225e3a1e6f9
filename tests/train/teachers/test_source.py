"""train/teachers/source.py and its wiring: a foreign (hf:) or exported (.onnx) teacher through train.distill
(online and from the cache), train.cache and train.compare, with the classes mapped by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.errors import UserError
from tests.train.test_distill import tiny_config
from tests.train.test_fkd_layers import save_teacher
from train.distill import main as distill_main
from train.teachers.source import BACKEND, CHECKPOINT, FOREIGN, check_teacher, teacher_kind, teacher_sha256

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def segformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SegFormer whose classes are the synthetic scenes' in reverse order (mapped by name)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from runtime.datasets.synthetic import CLASSES

    names = list(CLASSES)[::-1]
    torch.manual_seed(0)
    cfg = SegformerConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                          decoder_hidden_size=16, num_labels=len(names), id2label=dict(enumerate(names)),
                          label2id={n: i for i, n in enumerate(names)})
    folder = tmp_path_factory.mktemp("segformer")
    SegformerForSemanticSegmentation(cfg).save_pretrained(folder)
    return folder


def test_kinds_and_fingerprints(tmp_path: Path, segformer: Path) -> None:
    assert teacher_kind("runs/t/best.pt") == CHECKPOINT
    assert teacher_kind(f"hf:{segformer}") == FOREIGN and teacher_kind("torchvision:lraspp:w.pt") == FOREIGN
    assert teacher_kind("t.onnx") == BACKEND and teacher_kind("t.XML") == BACKEND and teacher_kind("t.engine") == BACKEND
    xml, bin_ = tmp_path / "t.xml", tmp_path / "t.bin"
    xml.write_text("<net/>")
    bin_.write_bytes(b"\0" * 8)
    before = teacher_sha256(xml)
    bin_.write_bytes(b"\1" * 8)  # other weights, same graph file: another teacher
    assert teacher_sha256(xml) != before
    with pytest.raises(UserError, match="missing.onnx does not exist"):
        check_teacher(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="nowhere"):
        check_teacher(f"hf:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize("cache", ["off", "auto"])
def test_lfd_from_a_hugging_face_teacher_online_and_cached(tmp_path: Path, segformer: Path, cache: str) -> None:
    config = str(tiny_config(tmp_path))
    assert distill_main(["--config", config, "method=lfd", f"teacher=hf:{segformer}", "budget=2",
                         "distill.teacher_layers=[decode_head.linear_fuse]", f"distill.teacher_cache={cache}"]) == 0
    results = json.loads((tmp_path / "runs" / "tiny-lfd-s0" / "results.json").read_text())
    assert results["iterations"] == 2 and results["teacher"]["miou"] is None
    assert f"hf:{segformer}" in results["teacher"]["arch"]
    lines = [json.loads(x) for x in (tmp_path / "runs" / "tiny-lfd-s0" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["fea"]) for r in lines if r["kind"] == "train")
    if cache == "auto":
        manifest = json.loads((Path(results["teacher_cache"]["path"]) / "manifest.json").read_text())
        t = manifest["teacher"]
        assert t["kind"] == "hf" and t["stride"] == 4 and t["class_map"] is not None  # mapped by name, reordered
        assert {f["name"] for f in t["feature_info"]} == {"decode_head.linear_fuse", "decoder"}
        assert manifest["outputs"]["logits"]["channels"] == 16


def test_an_onnx_teacher_runs_kd_from_its_cache_and_refuses_lfd(tmp_path: Path) -> None:
    from export.onnx import export_checkpoint

    teacher = save_teacher(tmp_path / "teacher.pt")
    onnx = tmp_path / "teacher.onnx"
    export_checkpoint(teacher, onnx, size=(64, 128), dynamic=True)
    config = str(tiny_config(tmp_path))
    assert distill_main(["--config", config, "method=kd", f"teacher={onnx}", "budget=1",
                         "distill.teacher_cache=auto"]) == 0
    results = json.loads((tmp_path / "runs" / "tiny-kd-s0" / "results.json").read_text())
    manifest = json.loads((Path(results["teacher_cache"]["path"]) / "manifest.json").read_text())
    assert manifest["teacher"]["kind"] == "onnx" and manifest["outputs"]["logits"]["stride"] == 1
    caches = sorted((tmp_path / "caches").iterdir())
    # LFD reads the decoder feature an exported model does not give: one sentence before any cache is built
    assert distill_main(["--config", config, "method=lfd", f"teacher={onnx}", "budget=1", "name=lfd",
                         "distill.teacher_cache=auto"]) == 2
    assert sorted((tmp_path / "caches").iterdir()) == caches


def test_compare_scores_a_foreign_teacher_through_its_class_map(tmp_path: Path, segformer: Path) -> None:
    from train.compare import main as compare_main

    out = tmp_path / "cmp"
    assert compare_main(["--config", str(tiny_config(tmp_path)), "--methods", "baseline,kd", "--budget", "1",
                         "--teacher", f"hf:{segformer}", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["teacher"]["miou"] is not None and 0.0 <= report["teacher"]["miou"] <= 1.0
    assert {r["method"] for r in report["methods"]} == {"baseline", "kd"}


def test_fkd_layers_ranks_a_foreign_teachers_layers_and_fkd_trains_with_them(tmp_path: Path, segformer: Path) -> None:
    from train.fkd_layers import main as fkd_layers_main

    config = str(tiny_config(tmp_path))
    out = tmp_path / "layers" / "fkd.yaml"
    assert fkd_layers_main(["--teacher", f"hf:{segformer}", "--config", config, "--images", "2", "--per-class", "20",
                            "--layers", "decode_head.linear_fuse,decode_head.activation", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["layer"] for r in report["layers"]] == ["decode_head.linear_fuse", "decode_head.activation"]
    snippet = out.read_text()
    assert f"teacher: hf:{segformer}" in snippet and "teacher_layers:" in snippet
    import yaml

    distill = yaml.safe_load(snippet)["distill"]
    pairs = ",".join(f"[{s},{t}]" for s, t in distill["fkd"]["pairs"])
    assert distill_main(["--config", config, "method=fkd", f"teacher=hf:{segformer}", "budget=1",
                         f"distill.fkd.pairs=[{pairs}]",
                         f"distill.teacher_layers=[{','.join(distill['teacher_layers'])}]"]) == 0
