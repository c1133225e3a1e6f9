"""Fixtures for calib tests: a quickly trained tiny model exported to ONNX (trained, so that its argmax
has margins, as a real student's has)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from calib_standins import SIZE, SYNTHETIC, SmallNet

from export.onnx_graph import export_graph
from runtime.datasets import build_dataset
from runtime.metadata import onnx_data_info
from runtime.preprocess import preprocess_for


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(onnx path, its DataInfo, val images, val labels): SmallNet after 30 Adam steps on 16 synthetic images."""
    torch.manual_seed(0)
    ds = build_dataset("synthetic", "train", **SYNTHETIC)
    info = ds.data_info(SIZE)
    samples = [ds[i] for i in range(len(ds))]
    x = torch.from_numpy(preprocess_for(info, [s[0] for s in samples]))
    y = torch.from_numpy(np.stack([s[1] for s in samples])).long()
    model = SmallNet(info.num_classes)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: more threads only add contention on a busy 2-core machine
    try:
        for step in range(30):
            idx = torch.arange(4) + 4 * (step % 4)
            loss = F.cross_entropy(model.segment(x[idx]), y[idx], ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    path = export_graph(model, info, tmp_path_factory.mktemp("model") / "s.onnx", size=SIZE, source={"test": True})
    info = onnx_data_info(onnx.load(str(path)), path)  # as exported (with its output kind), what INT8 must carry over
    assert info.output == "full"
    val = build_dataset("synthetic", "val", **SYNTHETIC)
    vs = [val[i] for i in range(len(val))]
    return path, info, preprocess_for(info, [s[0] for s in vs]), np.stack([s[1] for s in vs]), x.numpy()
