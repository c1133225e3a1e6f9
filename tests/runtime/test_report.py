"""runtime.report's latency plot: plain-number log ticks, the minimum mIoU span, numbered dots whose labels
never overlap (coincident dots share one), the key, and what bench/select hand it."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

import runtime.bench as bench
import runtime.report as report
import runtime.select as sel
from runtime.report import (
    LABEL_GID,
    MIN_SPAN,
    PlotPoint,
    group_coincident,
    join_numbers,
    key_lines,
    key_order,
    latency_figure,
    latency_plot,
    log_ticks,
    place_labels,
    tick_label,
    x_limits,
    y_limits,
)

PLAIN = re.compile(r"^\d+(\.\d+)?$")


def _demo_points() -> list[PlotPoint]:
    """Like the demo: 5-60 ms, mIoU 15.28-15.40, three models at exactly 15.40 and 19.9 ms."""
    return [PlotPoint(19.9, 15.40, "s.onnx", "openvino", "f32"),
            PlotPoint(19.9, 15.40, "s.openvino.xml", "openvino", "f32"),
            PlotPoint(19.9, 15.40, "s.onnx", "openvino", "bf16"),
            PlotPoint(21.7, 15.40, "s.onnx", "onnxruntime", "fp32"),
            PlotPoint(22.9, 15.39, "s.fp16.onnx", "onnxruntime", "fp16", hollow=True),
            PlotPoint(9.8, 15.28, "s.int8.cpu.onnx", "onnxruntime", "int8"),
            PlotPoint(5.2, 15.31, "s.int8.openvino.xml", "openvino", "int8"),
            PlotPoint(58.2, 15.40, "s.pt", "torch", "fp32", hollow=True)]


def _overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_log_ticks_are_1_2_5_with_every_decade_and_print_plainly():
    assert log_ticks(4.2, 72) == [5, 10, 20, 50]
    assert log_ticks(0.4, 3000) == [1, 10, 100, 1000]  # wide: decades only
    assert log_ticks(25.6, 155) == [30, 50, 70, 100]  # within one decade: 1, 2, 3, 5, 7
    for values in ([23.0], [12.0, 14.0], [5.2, 58.2], [0.3, 0.9], [150.0, 151.0]):
        lo, hi = x_limits(values)
        ticks = log_ticks(lo, hi)
        assert lo <= min(values) and max(values) <= hi and len(ticks) >= 2
    assert [tick_label(t) for t in (0.5, 5, 10, 20, 1000)] == ["0.5", "5", "10", "20", "1000"]


def test_y_limits_span_at_least_min_span_centred_unless_the_data_spans_more():
    lo, hi = y_limits([15.28, 15.40, 15.40, 15.39])
    assert hi - lo == pytest.approx(MIN_SPAN) and (lo + hi) / 2 == pytest.approx(15.34)
    lo, hi = y_limits([40.0, 70.0])
    assert lo < 40 and hi > 70 and hi - lo < 40
    assert y_limits([0.5])[0] == 0 and y_limits([99.9])[1] == 100  # shifted inside 0..100, span kept
    assert y_limits([0.5])[1] == pytest.approx(MIN_SPAN)


def test_coincident_dots_share_one_label_and_numbers_join():
    xy = [(100, 100), (100, 100), (102, 101), (120, 100), (300, 50)]
    assert group_coincident(xy, 6) == [[0, 1, 2], [3], [4]]
    assert join_numbers([3, 1, 2]) == "1,2,3" and join_numbers([1, 4, 5, 6, 7, 9]) == "1,4–7,9"


def test_key_numbers_every_point_once_fastest_first():
    pts = key_order(_demo_points())
    lines = key_lines(pts)
    assert [p.ms for p in pts] == sorted(p.ms for p in pts)
    numbers = [int(line.split()[0]) for line in lines[1:]]
    assert lines[0].split()[:2] == ["#", "model"] and numbers == list(range(1, len(pts) + 1))
    assert all(p.model in line and f"{p.ms:.2f}" in line and f"{p.miou:.2f}" in line for p, line in zip(pts, lines[1:]))
    long = key_lines([PlotPoint(1, 1, "a-very-long-model-name-" * 3 + "int8.cpu.onnx")])[1]
    assert "…" in long and long.split()[1].endswith("int8.cpu.onnx")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_placed_labels_never_overlap_dots_or_each_other(seed):
    rng = random.Random(seed)
    bounds = (0.0, 0.0, 600.0, 400.0)
    dots = [(rng.uniform(200, 400), rng.uniform(150, 250)) for _ in range(30)]  # 30 dots in a crowd
    obstacles = [(x - 5, y - 5, x + 5, y + 5) for x, y in dots]
    sizes = [(rng.choice([8.0, 14.0, 30.0]), 10.0) for _ in dots]
    boxes = place_labels(dots, sizes, obstacles, bounds, start=6)
    for i, b in enumerate(boxes):
        assert bounds[0] <= b[0] and b[2] <= bounds[2] and bounds[1] <= b[1] and b[3] <= bounds[3]
        assert b[2] - b[0] == pytest.approx(sizes[i][0])
        assert not any(_overlaps(b, o) for o in obstacles)
        assert not any(_overlaps(b, c) for c in boxes[i + 1:])


def test_figure_demo_reads_at_a_glance():
    """Eight demo-like points: the three at one spot get one label "n,n,n"; every point's number appears
    once; no two labels overlap and none covers a dot; ticks are plain numbers with one at 10."""
    pts = _demo_points()
    fig = latency_figure(pts)
    fig.canvas.draw()
    ax, kax = fig.axes
    xticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert xticks and all(PLAIN.match(t) for t in xticks) and "10" in xticks
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    assert all("$" not in t.get_text() and "e" not in t.get_text() for t in ax.get_yticklabels())
    lo, hi = ax.get_ylim()
    assert hi - lo >= MIN_SPAN - 1e-9

    labels = [t for t in ax.texts if t.get_gid() == LABEL_GID]
    numbers = [int(n) for t in labels for n in t.get_text().split(",")]
    assert sorted(numbers) == list(range(1, len(pts) + 1))
    ordered = key_order(pts)
    same = [str(k) for k, p in enumerate(ordered, 1) if (p.ms, p.miou) == (19.9, 15.40)]
    assert ",".join(same) in [t.get_text() for t in labels]

    renderer = fig.canvas.get_renderer()
    boxes = [tuple(t.get_window_extent(renderer).extents) for t in labels]
    dots = ax.transData.transform([(p.ms, p.miou) for p in ordered])
    for i, b in enumerate(boxes):
        assert not any(_overlaps(b, c) for c in boxes[i + 1:])
        assert not any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for x, y in dots)
    key_text = "\n".join(t.get_text() for t in kax.texts)
    assert all(p.model in key_text for p in pts)
    legend = [t.get_text() for t in kax.get_legend().get_texts()]
    assert {"openvino", "onnxruntime", "torch", "fp32", "bf16", "int8", "hollow"} <= set(legend)


def test_latency_plot_notes_and_writes_a_png(tmp_path, monkeypatch):
    out = tmp_path / "p.png"
    assert latency_plot(out, []) == "no plot: nothing was both timed and scored (see the status column)"
    assert latency_plot(out, [PlotPoint(float("nan"), 1.0, "m")], scored=False) == "no plot: pass --data to score mIoU"
    assert latency_plot(out, _demo_points()[:2]) is None
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert latency_plot(tmp_path / "q.png", _demo_points()).startswith("no plot: matplotlib is not installed")
    assert not (tmp_path / "q.png").exists()


def _capture(monkeypatch) -> dict:
    got: dict = {}

    def fake(path, points, draw=None, size=(6, 4), scored=True, hollow_label="hollow", include_ms=()):
        got.update(points=points, draw=draw, size=size, hollow_label=hollow_label, include_ms=include_ms)

    monkeypatch.setattr(report, "latency_plot", fake)
    return got


def test_select_plot_hollow_misfits_the_budget_written_on_its_line_and_the_choice(monkeypatch):
    row = lambda path, backend, precision, p50, miou: {  # noqa: E731
        "model": Path(path).name, "path": path, "backend": backend, "precision": precision, "input": "192x384",
        "status": "ok", "p50_ms": p50, "miou": miou}
    rows = [row("a/s.onnx", "onnxruntime", "fp32", 21.7, 15.40), row("a/s.onnx", "openvino", "bf16", 12.4, 15.38),
            row("a/s.pt", "torch", "fp32", 58.2, 15.40)]
    choice = sel.choose(rows, 30.0)
    got = _capture(monkeypatch)
    sel.plot(rows, choice, 30.0, Path("unused.png"))
    pts = got["points"]
    assert [(p.backend, p.precision, p.hollow) for p in pts] == [("onnxruntime", "fp32", False),
                                                                 ("openvino", "bf16", False), ("torch", "fp32", True)]
    assert [p.note for p in pts] == ["", "choice", ""] and list(got["include_ms"]) == [30.0]
    fig = latency_figure(pts, got["draw"], got["size"], got["hollow_label"], got["include_ms"])
    ax = fig.axes[0]
    assert any(t.get_text().strip() == "budget 30 ms" for t in ax.texts)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert {"does not fit", "Pareto front", "choice"} <= set(legend)


def test_bench_plot_passes_backend_and_the_files_precision(monkeypatch):
    got = _capture(monkeypatch)
    rows = [{"model": "s.int8.cpu.onnx", "path": "a/s.int8.cpu.onnx", "backend": "onnxruntime", "p50_ms": 9.8,
             "miou": 15.28},
            {"model": "s.pt", "path": "a/s.pt", "backend": "torch", "p50_ms": 58.0, "miou": 15.4},
            {"model": "cut.onnx", "path": "a/cut.onnx", "status": "error: x", "p50_ms": None, "miou": None}]
    bench.plot(rows, Path("unused.png"))
    assert [(p.model, p.backend, p.precision) for p in got["points"]] == [("s.int8.cpu.onnx", "onnxruntime", "int8"),
                                                                         ("s.pt", "torch", "fp32")]
