"""Checkpoints: round trip, clear errors for bad files, mismatched models, training state and RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from engine_standins import TinySeg, build_tiny, data_info

import train.models
from runtime.errors import UserError
from train.engine.checkpoint import (
    FORMAT_VERSION,
    capture_rng,
    check_same_classes,
    load_checkpoint,
    load_model_state,
    load_training_state,
    model_from_checkpoint,
    restore_rng,
    save_checkpoint,
    save_training_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; threads only add barrier stalls


@pytest.fixture
def ckpt_path(tmp_path):
    torch.manual_seed(0)
    model = TinySeg()
    path = save_checkpoint(tmp_path / "s.pt", model, data_info(), {"method": "kd", "iterations": 7})
    return path, model


def test_round_trip_rebuilds_the_same_model(ckpt_path, monkeypatch):
    path, model = ckpt_path
    ckpt = torch.load(path, weights_only=True)  # plain types only
    assert set(ckpt) == {"format_version", "model", "arch", "data", "train"}
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["train"] == {"method": "kd", "iterations": 7}
    assert not any(k.startswith("aux.") for k in ckpt["model"])
    monkeypatch.setattr(train.models, "build_model", build_tiny)
    rebuilt, info, loaded = model_from_checkpoint(path)
    assert not rebuilt.training and info == data_info() and loaded["_source"] == str(path)
    x = torch.randn(2, 3, 16, 32)
    model.eval()
    torch.testing.assert_close(rebuilt(x).logits, model(x).logits, rtol=0, atol=0)
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temp file


def test_missing_and_truncated_files_name_the_file(ckpt_path, tmp_path):
    path, _ = ckpt_path
    with pytest.raises(UserError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.pt is truncated or corrupt.*re-train / re-export"):
        load_checkpoint(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty.pt is truncated or corrupt"):
        load_checkpoint(empty)


def test_foreign_files_are_not_lfd_edge_checkpoints(tmp_path):
    raw = tmp_path / "raw.pt"
    torch.save(TinySeg().state_dict(), raw)
    with pytest.raises(UserError, match=r"raw.pt is not an LFD-Edge checkpoint \(it is a raw state dict; "
                                        r"missing format_version, model, arch, data, train\)"):
        load_checkpoint(raw)
    pickled = tmp_path / "module.pt"
    torch.save(TinySeg(), pickled)  # a whole pickled module: refused by weights_only
    with pytest.raises(UserError, match="module.pt holds pickled Python objects"):
        load_checkpoint(pickled)
    newer = tmp_path / "newer.pt"
    torch.save({"format_version": FORMAT_VERSION + 1, "model": {}, "arch": {}, "data": {}, "train": {}}, newer)
    with pytest.raises(UserError, match="newer.pt has format version 2, newer than"):
        load_checkpoint(newer)
    with pytest.raises(UserError, match="not a resumable training state"):
        save_training_state(tmp_path / "x.pt", {"model": {}, "optimizer": {}, "iteration": 0, "kind": "other"})
        load_training_state(tmp_path / "x.pt")


def test_architecture_and_class_mismatches_name_both(ckpt_path, monkeypatch):
    path, _ = ckpt_path
    ckpt = load_checkpoint(path)
    with pytest.raises(UserError, match=r"s.pt holds tiny \+ conv1x1 \(OS2\), 3 classes but the model it is "
                                        r"loaded into is tiny \+ conv1x1 \(OS2\), 5 classes \(size mismatch"):
        load_model_state(TinySeg(num_classes=5), ckpt["model"], str(path), ckpt["arch"])
    with pytest.raises(UserError, match="other layer widths than the model it is loaded into"):
        load_model_state(TinySeg(width=4), ckpt["model"], str(path), ckpt["arch"])
    monkeypatch.setattr(train.models, "build_model", build_tiny)
    bad = {**ckpt, "arch": {**ckpt["arch"], "num_classes": 5}}
    with pytest.raises(UserError, match="predicts 5 classes but its data block names 3"):
        model_from_checkpoint(bad)
    other = {"data": {"classes": ["a", "b", "c", "d"]}}
    with pytest.raises(UserError, match=r"teacher T.pt has 4 classes \(a, b, c, d\) but student S.pt has 3 "
                                        r"\(r, g, b\)"):
        check_same_classes(other, ckpt, "teacher T.pt", "student S.pt")
    with pytest.raises(UserError, match="different order"):
        check_same_classes({"classes": ["g", "r", "b"]}, ckpt, "A", "B")
    check_same_classes(ckpt, dict(ckpt), "A", "B")


def test_training_state_round_trips_rng_with_weights_only(tmp_path):
    if torch.cuda.is_available():
        torch.cuda.init()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rng = capture_rng()
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    save_training_state(tmp_path / "last.pt", {"model": {}, "optimizer": {}, "iteration": 5, "rng": rng})
    state = load_training_state(tmp_path / "last.pt")  # torch.load(weights_only=True) inside
    assert state["iteration"] == 5 and state["kind"] == "training_state"
    random.random(), np.random.rand(), torch.rand(7)  # move every generator on
    restore_rng(state["rng"])
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
