"""The report's figures, with matplotlib: each as inline SVG text and a PNG file beside the report.

Every function returns None when the rows hold no data for its figure, so the report leaves
it out instead of drawing an empty or zero-filled chart. Figures are built with the
object-oriented `matplotlib.figure.Figure` (no pyplot): no GUI backend, no global state.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from modelshrink.report.pareto import pareto_front, search_figures
from modelshrink.report.view import Stat, VariantView

OK_COLOR, FRONT_COLOR = "#4477aa", "#cc3311"
SPLIT_COLORS = {"train": "#bbbbbb", "val": "#66ccee", "test": "#4477aa"}


@dataclass(frozen=True)
class Plot:
    name: str  # file stem of the PNG, e.g. "pareto_size"
    title: str
    caption: str
    svg: str  # the <svg> element, ready to inline
    png: Path


def label(text: str) -> str:
    """A user string as matplotlib text: `$` would otherwise start mathtext (and can raise on bad math)."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


def render(fig: Figure, name: str, title: str, caption: str, out_dir: Path) -> Plot:
    """The figure as SVG text (for the HTML) and as a PNG file in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    # hashsalt: clip-path ids differ between the figures inlined in one page; no date: stable output.
    with matplotlib.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    # The layout is solved for the SVG; the PNG reuses it (constrained layout is a third of the time).
    fig.set_layout_engine("none")
    fig.savefig(png, format="png", dpi=110)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline SVG in HTML needs neither
    return Plot(name, title, caption, svg, png)


def _pareto(views: list[VariantView], key: str, xlabel: str, logx: bool) -> Figure | None:
    pts = [(v, x, y) for v in views if (x := v.stat(key)) is not None and (y := v.stat("test_accuracy")) is not None]
    if logx:
        pts = [p for p in pts if p[1].mean > 0]
    if not pts:
        return None
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    xs = np.array([x.mean for _, x, _ in pts])
    ys = 100 * np.array([y.mean for _, _, y in pts])
    ax.errorbar(xs, ys, xerr=[x.std for _, x, _ in pts], yerr=[100 * y.std for _, _, y in pts], fmt="o",
                color=OK_COLOR, ecolor="#777777", capsize=3, label="variant (mean ± std over seeds)")  # fmt: skip
    front = pareto_front(list(zip(xs, ys, strict=True)))
    # The frontier as a staircase: a point is dominated if it lies below and right of it.
    ax.step(xs[front], ys[front], where="post", color=FRONT_COLOR, lw=1.5, label="Pareto frontier")
    ax.plot(xs[front], ys[front], "o", mfc="none", mec=FRONT_COLOR, ms=11)
    for (v, _, _), x, y in zip(pts, xs, ys, strict=True):
        ax.annotate(label(v.name), (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside upper center", ncols=2, fontsize=8)  # outside: never hides a point
    return fig


def pareto_size(views: list[VariantView]) -> Figure | None:
    return _pareto(views, "file_bytes", "deployable file size (bytes, log scale)", logx=True)


def pareto_latency(views: list[VariantView]) -> Figure | None:
    return _pareto(views, "latency_ms_p50", "latency p50 (ms, one input)", logx=False)


SEARCH_AXES = (
    ("bytes", "val_accuracy", "deployable file (bytes, log scale)", True),
    ("ms_b256", "onnx_val_accuracy", "ONNX file latency, batch 256, 1 thread (ms)", False),
)


def search_front(views: list[VariantView]) -> Figure | None:
    """`modelshrink search`'s trials (variants named search-*) and the baseline: size and latency at batch 256
    against validation accuracy, the front on validation as a staircase. Search runs one seed: its first row."""
    points = [(v.name, f) for v in views if v.ok and (v.name == "baseline" or v.name.startswith("search-"))
              and (f := search_figures(v.ok[0])) is not None]  # fmt: skip
    if not any(name.startswith("search-") for name, _ in points):
        return None
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    for ax, (cost, val, xlabel, logx) in zip(fig.subplots(1, 2), SEARCH_AXES, strict=True):
        xs = np.array([float(f[cost]) for _, f in points])
        ys = 100 * np.array([float(f[val]) for _, f in points])
        ax.plot(xs, ys, "o", color=OK_COLOR, alpha=0.6, label="trial (validation accuracy)")
        front = pareto_front(list(zip(xs, ys, strict=True)))
        ax.step(xs[front], ys[front], where="post", color=FRONT_COLOR, lw=1.5, label="front (chosen on validation)")
        for i in front:
            ax.annotate(label(points[i][0].removeprefix("search-")), (xs[i], ys[i]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7)  # fmt: skip
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2, fontsize=8)
    return fig


def _hbars(
    ax: Axes, names: list[str], series: list[tuple[str, list[Stat | None], str]], scale: float, fmt: str
) -> None:
    """Grouped horizontal bars, one group per variant; a missing value draws no bar (never a 0)."""
    height = 0.8 / len(series)
    y = np.arange(len(names))
    for j, (_, stats, color) in enumerate(series):
        pos = y + (j - (len(series) - 1) / 2) * height
        have = [(p, s) for p, s in zip(pos, stats, strict=True) if s is not None]
        for p, s in zip(pos, stats, strict=True):
            if s is None:
                ax.text(0, p, " —", va="center", fontsize=7, color="#777777")
            else:
                ax.text(scale * (s.mean + s.std), p, " " + fmt.format(scale * s.mean), va="center", fontsize=7)
        if have:  # one call per series: far fewer artists to lay out than one bar at a time
            means, stds = np.array([s.mean for _, s in have]), np.array([s.std for _, s in have])
            ax.barh([p for p, _ in have], scale * means, height, xerr=scale * stds if stds.any() else None,
                    color=color, ecolor="#444444", capsize=2)  # fmt: skip
    ax.set_yticks(y, [label(n) for n in names])
    ax.invert_yaxis()
    handles = [Patch(color=color, label=name) for name, _, color in series]
    ax.figure.legend(handles=handles, loc="outside upper center", ncols=len(series), fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)


def size_bars(views: list[VariantView]) -> Figure | None:
    """Bytes on disk per variant: the deployable file, its gzip/zstd size and the compact file."""
    views = [v for v in views if v.ok]
    candidates = [("ONNX file", "file_bytes", "#4477aa"), ("gzip", "file_gzip_bytes", "#66ccee"),
                  ("zstd", "file_zstd_bytes", "#228833"), ("compact", "compact_bytes", "#ccbb44")]  # fmt: skip
    series = [(n, [v.stat(k) for v in views], c) for n, k, c in candidates]
    series = [s for s in series if any(x is not None for x in s[1])]
    if not series:
        return None
    fig = Figure(figsize=(7.5, 1.2 + 0.25 * len(views) * len(series)), layout="constrained")
    ax = fig.add_subplot()
    _hbars(ax, [v.name for v in views], series, 1 / 1024, "{:,.0f}")
    ax.set_xlabel("size (KB = 1024 bytes)")
    return fig


def accuracy_bars(views: list[VariantView]) -> Figure | None:
    """Train, validation and test accuracy per variant; bars start at 0, as honest bars do."""
    views = [v for v in views if v.ok]
    series = [(s, [v.stat(f"{s}_accuracy") for v in views], c) for s, c in SPLIT_COLORS.items()]
    series = [s for s in series if any(x is not None for x in s[1])]
    if not series:
        return None
    fig = Figure(figsize=(7.5, 1.2 + 0.25 * len(views) * len(series)), layout="constrained")
    ax = fig.add_subplot()
    _hbars(ax, [v.name for v in views], series, 100, "{:.2f}")
    ax.set_xlim(0, 112)
    ax.set_xlabel("accuracy (%), mean ± std over seeds")
    return fig


def _numbers(history: list[dict[str, Any]], key: str) -> list[float] | None:
    """One number per epoch, or None when any epoch lacks it (a curve with holes would mislead)."""
    values = [h.get(key) for h in history]
    return (
        [float(v) for v in values if isinstance(v, int | float)]
        if all(isinstance(v, int | float) for v in values)
        else None
    )


def training_curves(views: list[VariantView]) -> Figure | None:
    """The baseline's epochs (loss, validation accuracy) and each variant's fine-tuning epochs."""
    histories = [(r["seed"], [h for h in r.get("baseline_history") or [] if isinstance(h, dict)])
                 for v in views for r in v.ok if isinstance(r.get("baseline_history"), list)]  # fmt: skip
    base = next(((seed, hist) for seed, hist in histories if hist), None)
    tunes = []  # (variant, seeds, [train_loss per fine-tuning epoch, all steps in order, mean over seeds])
    for v in views:
        per_seed = []
        for r in v.ok:
            steps = r["steps"] if isinstance(r.get("steps"), list) else []
            losses = [h.get("train_loss") for s in steps if isinstance(s, dict) for h in s.get("history") or []]
            if losses and all(isinstance(x, int | float) for x in losses):
                per_seed.append(losses)
        if per_seed and all(len(x) == len(per_seed[0]) for x in per_seed):
            tunes.append((v.name, len(per_seed), list(np.mean(per_seed, axis=0))))
    if base is None and not tunes:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    panels = (base is not None) + bool(tunes)
    col = 1
    if base is not None:
        seed, hist = base
        ax = fig.add_subplot(1, panels, col)
        col += 1
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            vals = _numbers(hist, key)
            if vals is not None:
                ax.plot(epochs, vals, style, marker=".", label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(f"baseline training (seed {seed})", fontsize=10)
        lines = list(ax.get_lines())
        accs = _numbers(hist, "val_accuracy")
        if accs is not None:
            ax2 = ax.twinx()
            lines += ax2.plot(epochs, [100 * a for a in accs], ":", color="#228833", marker=".", label="val accuracy")
            ax2.set_ylabel("validation accuracy (%)")
        ax.legend(handles=lines, fontsize=8, loc="center right")  # one legend for both y axes
        ax.grid(True, alpha=0.3)
    if tunes:
        ax = fig.add_subplot(1, panels, col)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for name, n, losses in tunes:
            ax.plot(range(1, len(losses) + 1), losses, marker=".", label=label(f"{name} (mean of {n} seeds)"))
        ax.set_xlim(0.5, max(len(losses) for _, _, losses in tunes) + 0.5)
        ax.set_xlabel("fine-tuning epoch (all steps of the variant, in order)")
        ax.set_ylabel("training loss")
        ax.set_title("fine-tuning per variant", fontsize=10)
        ax.grid(True, alpha=0.3)
        if len(tunes) <= 12:  # past that a legend hides the curves
            ax.legend(fontsize=7)
    return fig


def summed_confusion(view: VariantView) -> np.ndarray | None:
    """The test confusion matrices of the variant's seeds, summed (rows: true, columns: predicted)."""
    mats = [r.get("test_confusion_matrix") for r in view.ok]
    if not mats or any(not isinstance(m, list) for m in mats):
        return None
    try:
        arrays = [np.asarray(m, dtype=np.int64) for m in mats]
        total = np.sum(arrays, axis=0)
    except (ValueError, TypeError):  # ragged or mismatched: not a matrix we can show
        return None
    return total if total.ndim == 2 and total.shape[0] == total.shape[1] else None


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix: 2·TP / (2·TP + FP + FN); 0 for a class never seen or predicted."""
    tp = np.diag(cm).astype(float)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def class_names(view: VariantView, n: int) -> list[str]:
    names = next((r["labels"] for r in view.ok if isinstance(r.get("labels"), list)), None)
    return [str(x) for x in names] if names is not None and len(names) == n else [str(i) for i in range(n)]


def best_classes(view: VariantView) -> Figure | None:
    """Per-class F1 and the confusion matrix of one variant (the report passes the best one)."""
    cm = summed_confusion(view)
    if cm is None:
        return None
    names = [label(n) for n in class_names(view, len(cm))]
    f1 = per_class_f1(cm)
    fig = Figure(figsize=(11, 4.2 + 0.15 * len(cm)), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.2])
    ax1.barh(np.arange(len(f1)), f1, color=OK_COLOR)
    for i, v in enumerate(f1):
        ax1.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax1.set_yticks(np.arange(len(f1)), names)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1.15)
    ax1.set_xlabel("test F1 per class")
    ax1.grid(True, axis="x", alpha=0.3)
    im = ax2.imshow(cm, cmap="Blues")
    ax2.set_xticks(np.arange(len(cm)), names, rotation=45, ha="right")
    ax2.set_yticks(np.arange(len(cm)), names)
    ax2.set_xlabel("predicted")
    ax2.set_ylabel("true")
    if len(cm) <= 20:  # counts in the cells while they stay readable
        for (i, j), c in np.ndenumerate(cm):
            ax2.text(j, i, str(c), ha="center", va="center", fontsize=7,
                     color="white" if c > cm.max() / 2 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax2, shrink=0.8)
    return fig
