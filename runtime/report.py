"""What every measuring command shares: latency percentiles, console/Markdown tables, atomic JSON reports
(with the environment block of runtime.machine) and the latency-accuracy scatter plot."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io import atomic_write_json
from runtime.machine import environment


# --- latency ---------------------------------------------------------------------------------
def latency_summary(ms: Sequence[float], batch: int = 1) -> dict[str, float | int]:
    """p50/p90/p99/mean/min/max of per-call milliseconds and FPS = batch * 1000 / mean ms."""
    if len(ms) == 0:
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan"),
                "min": float("nan"), "max": float("nan"), "fps": float("nan")}
    a = np.asarray(ms, np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean,
            "min": float(a.min()), "max": float(a.max()), "fps": batch * 1000.0 / mean if mean > 0 else float("inf")}


# --- tables ----------------------------------------------------------------------------------
def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], markdown: bool = False,
                 digits: int = 2, headers: Sequence[str] | None = None) -> str:
    """Rows of dicts -> an aligned console table, or a GitHub Markdown table with `markdown=True`."""
    heads = list(headers or columns)
    cells = [[_cell(r.get(c), digits) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(row) for row in cells])


def write_report(path: str | Path, report: dict[str, Any], threads: int | None = None) -> Path:
    """Write `report` plus an `environment` block as JSON, atomically; returns the path."""
    body = dict(report)
    body.setdefault("environment", environment(threads))
    return atomic_write_json(path, body)


# --- plots -----------------------------------------------------------------------------------
# The y axis spans at least this many mIoU points (centred on the data): two runs of the same weights
# differ by about a tenth of a point, which on an axis fitted to the data would fill the plot and read
# as a real gap.
MIN_SPAN = 4.0
BACKEND_COLOURS = {"onnxruntime": "tab:blue", "openvino": "tab:purple", "torch": "tab:orange",
                   "tensorrt": "tab:green"}
OTHER_COLOUR = "tab:brown"
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^", "int8 q/dq": "v"}
OTHER_MARKER = "P"
MARKER_AREA = 42.0  # scatter `s` (pt^2) of a dot
LABEL_PT = 7.0  # font size of the numbers beside the dots, the key and the legend
MODEL_CHARS = 32  # longest model name in the key; a longer one loses its middle
DPI = 120
LABEL_GID = "point-label"  # gid of the number labels beside the dots

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (pixels, y up)


@dataclass(frozen=True)
class PlotPoint:
    """One dot of `latency_plot`: p50 latency (ms), mIoU (%), what ran, and whether it is drawn hollow
    (the caller's `hollow_label` says what that means, e.g. "does not fit the budget")."""

    ms: float
    miou: float
    model: str
    backend: str = "?"
    precision: str = "?"
    hollow: bool = False
    note: str = ""  # ends its row of the key, e.g. "choice"


def precision_family(precision: str) -> str:
    """The precision a marker stands for: fp32, fp16, bf16, int8, int8 q/dq, or the string itself when
    unknown. OpenVINO's f32/f16 hints count as fp32/fp16; a combination such as int8+bf16 as its weights."""
    p = precision.lower().split("+", 1)[0].strip()
    return {"f32": "fp32", "f16": "fp16"}.get(p, p)


def point_style(p: PlotPoint) -> tuple[str, str]:
    """(colour, marker) of a dot: the colour says the backend, the marker the precision."""
    return (BACKEND_COLOURS.get(p.backend, OTHER_COLOUR),
            PRECISION_MARKERS.get(precision_family(p.precision), OTHER_MARKER))


def key_order(points: Sequence[PlotPoint]) -> list[PlotPoint]:
    """The points as numbered in the key (number k is item k - 1): fastest first, so that the numbers
    grow left to right; equal latencies best mIoU first."""
    return sorted(points, key=lambda p: (p.ms, -p.miou))


def short_name(name: str, chars: int = MODEL_CHARS) -> str:
    """`name` cut to `chars` characters by replacing its middle with '…' (both ends tell models apart)."""
    if len(name) <= chars:
        return name
    head = (chars - 1) * 2 // 5
    return name[:head] + "…" + name[len(name) - (chars - 1 - head):]


def key_lines(points: Sequence[PlotPoint]) -> list[str]:
    """The key beside the plot: a header, then one aligned row per point in the given order, numbered
    from 1: number, model, backend, precision, p50 ms, mIoU %, and the point's note if any has one."""
    noted = any(p.note for p in points)
    head = ["#", "model", "backend", "precision", "p50 ms", "mIoU %"] + ([""] if noted else [])
    rows = [[str(k), short_name(p.model), p.backend, p.precision, f"{p.ms:.2f}", f"{p.miou:.2f}"]
            + ([p.note] if noted else []) for k, p in enumerate(points, 1)]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    right = {0, 4, 5}
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [head] + rows]


def join_numbers(numbers: Sequence[int]) -> str:
    """The label of dots at one spot: '1,2,3'; a run of four or more consecutive numbers as '4–9'."""
    nums = sorted(numbers)
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts += [f"{nums[i]}–{nums[j]}"] if j - i >= 3 else [str(n) for n in nums[i:j + 1]]
        i = j + 1
    return ",".join(parts)


def group_coincident(xy: Sequence[tuple[float, float]], radius: float) -> list[list[int]]:
    """Indices into `xy` (pixels) in groups whose members are all within `radius` of each other: dots that
    cover each other share one label. A point joins the first group it fits, else starts one; groups and
    their members keep the input order."""
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(xy):
        for g in groups:
            if all(math.hypot(x - xy[j][0], y - xy[j][1]) <= radius for j in g):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _inside(a: Box, bounds: Box) -> bool:
    return a[0] >= bounds[0] and a[1] >= bounds[1] and a[2] <= bounds[2] and a[3] <= bounds[3]


# where a label goes, in order of preference: right of its dot, then above/below-right, above, below, left
_DIRECTIONS = [(1, 0), (1, 1), (1, -1), (0, 1), (0, -1), (-1, 0), (-1, 1), (-1, -1)]


def place_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                 obstacles: Sequence[Box], bounds: Box, start: float, step: float = 6.0,
                 rings: int = 16) -> list[Box]:
    """A box per label (pixels): the first of 8 directions x `rings` distances (from `start`, growing by
    `step`) around its anchor where the box stays inside `bounds` and covers no obstacle (the dots) and no
    label placed before it. Should none be free (a plot more crowded than any run of these commands), the
    least covered candidate inside `bounds`."""
    placed: list[Box] = []
    for (ax_, ay), (w, h) in zip(anchors, sizes):
        best: tuple[float, Box] | None = None
        for ring in range(rings):
            d = start + ring * step
            for dx, dy in _DIRECTIONS:
                cx, cy = ax_ + dx * (d + w / 2), ay + dy * (d + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                if not _inside(box, bounds):
                    continue
                covered = sum(_overlap(box, o) for o in [*obstacles, *placed])
                if best is None or covered < best[0]:
                    best = (covered, box)
                if covered == 0:
                    break
            if best is not None and best[0] == 0:
                break
        placed.append(best[1] if best is not None else (ax_ - w / 2, ay - h / 2, ax_ + w / 2, ay + h / 2))
    return placed


def y_limits(values: Sequence[float], min_span: float = MIN_SPAN) -> tuple[float, float]:
    """mIoU axis limits: the data with a margin, widened to `min_span` points centred on the data, kept
    inside 0..100 by shifting."""
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    if hi - lo <= 100:
        shift = max(0.0, -lo) - max(0.0, hi - 100)
        lo, hi = lo + shift, hi + shift
    return lo, hi


def log_ticks(lo: float, hi: float) -> list[float]:
    """Latency ticks from lo to hi: 1, 2, 5 x 10^k (only 10^k over more than 2.5 decades; 1, 2, 3, 5, 7
    x 10^k within one decade, so that 30-130 ms shows 30, 50, 70, 100), so every decade in the range has
    its tick."""
    span = math.log10(hi / lo)
    subs: tuple[int, ...] = (1, 2, 3, 5, 7) if span <= 1 else (1, 2, 5) if span <= 2.5 else (1,)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [round(s * 10.0 ** k, 12) for k in range(first, last + 1) for s in subs]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def x_limits(values: Sequence[float]) -> tuple[float, float]:
    """Latency axis limits (log): the data with a 25 % margin each side, widened to the 1-2-5 values
    around it when that holds fewer than two ticks."""
    lo, hi = min(values) / 1.25, max(values) * 1.25
    if len(log_ticks(lo, hi)) < 2:
        ladder = log_ticks(lo / 10, hi * 10)
        lo = max([t for t in ladder if t <= lo], default=lo)
        hi = min([t for t in ladder if t >= hi], default=hi)
    return lo, hi


def tick_label(value: float, _pos: int | None = None) -> str:
    """A tick as a plain number (5, 10, 0.5, 1000), never 2 x 10^1."""
    return f"{value:g}"


def _extent(bbox: Any) -> Box:
    x0, y0, x1, y1 = (float(v) for v in bbox.extents)
    return x0, y0, x1, y1


def _legend_columns(ax: Any, points: Sequence[PlotPoint], hollow_label: str) -> list[list[Any]]:
    """Legend handles in columns: the backends' colours, the precisions' markers, then hollow (when a point
    is) and what `draw` gave a label; empty columns left out."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def rank(order: Sequence[str], name: str) -> tuple[int, str]:
        return (list(order).index(name) if name in order else len(order), name)

    backends = sorted({p.backend for p in points}, key=lambda b: rank(list(BACKEND_COLOURS), b))
    families = sorted({precision_family(p.precision) for p in points}, key=lambda f: rank(list(PRECISION_MARKERS), f))
    extras: list[Any] = []
    if any(p.hollow for p in points):
        extras.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="0.35", mew=1.4, label=hollow_label))
    extras += ax.get_legend_handles_labels()[0]
    columns: list[list[Any]] = [[Patch(color=BACKEND_COLOURS.get(b, OTHER_COLOUR), label=b) for b in backends],
                                [Line2D([], [], ls="none", marker=PRECISION_MARKERS.get(f, OTHER_MARKER),
                                        color="0.35", label=f) for f in families], extras]
    return [c for c in columns if c]


def _draw_key(fig: Any, points: Sequence[PlotPoint], legend: list[list[Any]], plot_size: tuple[float, float]
              ) -> None:
    """Size the figure to the plot plus the key: the numbered rows of `key_lines` (each with its dot), the
    legend (`_legend_columns`) under them."""
    lines = key_lines(points)
    char_in, row_in = 0.6 * LABEL_PT / 72, 1.55 * LABEL_PT / 72  # DejaVu Sans Mono advances 0.6 em
    key_w = 0.6 + char_in * max(len(line) for line in lines)
    rows = max(len(c) for c in legend)
    legend_h = 0.3 + 0.19 * rows
    plot_w, plot_h = plot_size
    fig_w, fig_h = plot_w + key_w, max(plot_h, 0.3 + row_in * len(lines) + legend_h)
    fig.set_size_inches(fig_w, fig_h)
    fig.axes[0].set_position((0.7 / fig_w, 0.5 / fig_h, (plot_w - 0.85) / fig_w, (fig_h - 0.75) / fig_h))
    kax = fig.add_axes((plot_w / fig_w, 0, key_w / fig_w, 1))
    kax.set_xlim(0, key_w)  # data units = inches
    kax.set_ylim(0, fig_h)
    kax.axis("off")
    y = fig_h - 0.3
    kax.text(0.3, y, lines[0], family="monospace", fontsize=LABEL_PT, va="center", fontweight="bold", color="0.1")
    for p, line in zip(points, lines[1:]):
        y -= row_in
        colour, marker = point_style(p)
        kax.scatter(0.15, y, s=MARKER_AREA * 0.7, marker=marker, facecolors="white" if p.hollow else colour,
                    edgecolors=colour, linewidths=1.2 if p.hollow else 0.5)
        kax.text(0.3, y, line, family="monospace", fontsize=LABEL_PT, va="center", color="0.45" if p.hollow else "0.1")
    from matplotlib.lines import Line2D

    # legend fills column by column: pad each to `rows` so that every kind of entry has its own column
    handles = [h for c in legend for h in c + [Line2D([], [], ls="none", label="")] * (rows - len(c))]
    kax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.05, y - 0.2), bbox_transform=kax.transData,
               ncol=len(legend), fontsize=LABEL_PT, frameon=False, handlelength=1.4, columnspacing=1.5,
               borderaxespad=0)


def _number_dots(ax: Any, points: Sequence[PlotPoint], renderer: Any) -> None:
    """Write each dot's key number beside it: dots that cover each other share one label ('1,2,3'); labels
    avoid every dot, every text `draw` wrote and each other (`place_labels`); one moved away from its dot
    gets a leader line."""
    xy = [(float(x), float(y)) for x, y in ax.transData.transform([(p.ms, p.miou) for p in points])]
    r = math.sqrt(MARKER_AREA) / 2 * DPI / 72
    groups = group_coincident(xy, r)
    anchors = [(sum(xy[i][0] for i in g) / len(g), sum(xy[i][1] for i in g) / len(g)) for g in groups]
    obstacles = [(x - r - 1, y - r - 1, x + r + 1, y + r + 1) for x, y in xy]
    obstacles += [_extent(t.get_window_extent(renderer)) for t in ax.texts]
    texts = [ax.text(points[g[0]].ms, points[g[0]].miou, join_numbers([i + 1 for i in g]), fontsize=LABEL_PT,
                     fontweight="bold", ha="center", va="center", color="0.1", zorder=5, gid=LABEL_GID,
                     bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})
             for g in groups]
    sizes = [(e.width + 3, e.height + 2) for e in (t.get_window_extent(renderer) for t in texts)]
    start = r + 2
    to_data = ax.transData.inverted()
    for t, (x, y), box in zip(texts, anchors, place_labels(anchors, sizes, obstacles, _extent(ax.bbox), start)):
        cx, cy = to_data.transform(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        t.set_position((float(cx), float(cy)))
        near = (min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3]))
        if math.hypot(near[0] - x, near[1] - y) > start + 4:
            line = to_data.transform([(x, y), near])
            ax.plot(line[:, 0], line[:, 1], color="0.5", lw=0.6, zorder=2)


def latency_figure(points: Sequence[PlotPoint], draw: Callable[[Any], None] | None = None,
                   size: tuple[float, float] = (6, 4), hollow_label: str = "hollow",
                   include_ms: Sequence[float] = ()) -> Any:
    """The matplotlib Figure `latency_plot` saves (needs matplotlib, and points with ms > 0). Its first axes
    is the plot, whose number labels have gid LABEL_GID; the second holds the key and the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

    ordered = key_order(points)
    fig = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.1, 0.5, 0.8))
    for p in ordered:
        colour, marker = point_style(p)
        ax.scatter(p.ms, p.miou, s=MARKER_AREA, marker=marker, zorder=3,
                   facecolors="white" if p.hollow else colour, edgecolors=colour if p.hollow else "white",
                   linewidths=1.4 if p.hollow else 0.6)
    ax.set_xscale("log")
    xlo, xhi = x_limits([p.ms for p in ordered] + [v for v in include_ms if v > 0])
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(*y_limits([p.miou for p in ordered]))
    ax.set_autoscale_on(False)
    ax.xaxis.set_major_locator(FixedLocator(log_ticks(xlo, xhi)))
    ax.xaxis.set_major_formatter(FuncFormatter(tick_label))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    ax.set_xlabel("p50 latency per batch (ms, log scale)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    if draw is not None:
        draw(ax)
    _draw_key(fig, ordered, _legend_columns(ax, ordered, hollow_label), size)
    _number_dots(ax, ordered, canvas.get_renderer())  # last: it needs the final pixel positions
    return fig


def latency_plot(path: str | Path, points: Sequence[PlotPoint], draw: Callable[[Any], None] | None = None,
                 size: tuple[float, float] = (6, 4), scored: bool = True, hollow_label: str = "hollow",
                 include_ms: Sequence[float] = ()) -> str | None:
    """Save a PNG of mIoU % (y) against p50 latency in ms (x, log, plain-number ticks): one dot per point,
    coloured by backend, shaped by precision, hollow where `point.hollow` (`hollow_label` in the legend),
    numbered in a key beside the plot (`key_lines`); then `draw(ax)` adds extras (lines and texts; artists
    with a label go into the legend) with the axis limits already set: latency covers the points and
    `include_ms` (e.g. a budget), mIoU at least MIN_SPAN points. `size`: inches of the plot, the key is
    added on the right. Written atomically (runtime.io.atomic_write). Returns a note instead of writing when
    there is no point with a latency > 0 and a finite mIoU (`scored`: whether the command was given --data
    to score on) or matplotlib is missing."""
    usable = [p for p in points if math.isfinite(p.ms) and p.ms > 0 and math.isfinite(p.miou)]
    if not usable:
        return ("no plot: nothing was both timed and scored (see the status column)" if scored
                else "no plot: pass --data to score mIoU")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    from runtime.io import atomic_write

    fig = latency_figure(usable, draw, size, hollow_label, include_ms)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    return None
