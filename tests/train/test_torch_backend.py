from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from runtime.backends import load_backend
from runtime.errors import MissingDependency
from runtime.metadata import DataInfo, default_palette


def test_missing_torch_is_one_sentence(tmp_path, monkeypatch):
    path = tmp_path / "s.pt"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependency, match="pip install"):
        load_backend(path)


def test_runs_checkpoint_model_in_inference_mode(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 1)
    seen = {}

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def segment(self, x):
            seen["channels_last"] = x.is_contiguous(memory_format=torch.channels_last)
            seen["inference"] = torch.is_inference_mode_enabled()
            return self.conv(x)

    info = DataInfo(classes=["a", "b", "c"], palette=default_palette(3), input_size=(16, 32))
    fake = types.ModuleType("train.engine.checkpoint")
    fake.model_from_checkpoint = lambda p: (Tiny().eval(), info, {"model": {}, "arch": {"k": 3}})
    fake.training_data = lambda ckpt, info: None
    monkeypatch.setitem(sys.modules, "train.engine.checkpoint", fake)
    path = tmp_path / "s.pt"
    path.write_bytes(b"x")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 32)).astype(np.float32)
    with load_backend(path, threads=1, device="cpu") as b:
        assert b.name == "torch" and b.output_kind == "logits" and b.info is info and b.input_size == (16, 32)
        y = b.infer(x)
    with torch.no_grad():
        expected = conv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert seen == {"channels_last": True, "inference": True}
