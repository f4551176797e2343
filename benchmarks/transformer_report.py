"""The MiniLM benchmark's verdict and Pareto plots (benchmarks/transformer.py's table rows in, lines and a PNG out).

Each row is one (part, variant, file) with its seeds' mean: `bytes`, `acc` (test accuracy), and median ms per
call `b<batch>t<threads>` at batch 1 and 32 on 1 and 2 threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelshrink.report.pareto import pareto_front

# Latency budgets a user ships against: a batch of 32 sentences on a 2-core server, one sentence on one core.
BUDGETS = {"b32t2": (300.0, 150.0, 100.0, 50.0, 20.0, 5.0), "b1t1": (10.0, 5.0, 2.0, 1.0, 0.5)}
BUDGET_WORDS = {"b32t2": "per batch of 32 sentences on 2 threads", "b1t1": "per sentence on 1 thread"}
TIE = 0.0025  # accuracy within 0.25 points of the best that fits counts as a tie: the smaller file wins


def ship(rows: list[dict[str, Any]]) -> list[str]:
    """'What should I ship' per latency budget: the most accurate file that fits (ties: the smaller)."""
    out = ["What should I ship? The most accurate file within each latency budget (within 0.25 points: the smaller):"]
    for key, budgets in BUDGETS.items():
        for budget in budgets:
            fits = [r for r in rows if r.get(key) is not None and r[key] <= budget and r.get("bytes")]
            if not fits:  # tighter budgets: nothing either
                out.append(f"- <= {budget:g} ms {BUDGET_WORDS[key]} (and tighter): nothing measured fits")
                break
            best = max(r["acc"] for r in fits)
            pick = min((r for r in fits if r["acc"] >= best - TIE), key=lambda r: r["bytes"])
            out.append(f"- <= {budget:g} ms {BUDGET_WORDS[key]}: {pick['variant']} {pick['file']} "
                       f"({pick['stage']}) — {100 * pick['acc']:.2f} % test, {pick['bytes'] / 1e6:.2f} MB, "
                       f"{pick[key]:.2f} ms")  # fmt: skip
    return out


def pareto_png(rows: list[dict[str, Any]], dest: Path) -> Path | None:
    """Test accuracy against file bytes and against ms per batch of 32 (2 threads), the frontier marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), layout="constrained")
    drawn = False
    for ax, key, xlabel in zip(fig.subplots(1, 2), ("bytes", "b32t2"),
                               ("file bytes (log)", "ms per batch of 32, 2 threads (log)"), strict=True):  # fmt: skip
        pts = [r for r in rows if r.get(key) and r.get("acc") is not None]
        if not pts:
            continue
        drawn = True
        ax.scatter([r[key] for r in pts], [100 * r["acc"] for r in pts], color="#4477aa", s=18)
        front = [pts[i] for i in pareto_front([(r[key], r["acc"]) for r in pts])]
        ax.step([r[key] for r in front], [100 * r["acc"] for r in front], where="post", color="#cc3311")
        for r in front:
            ax.annotate(f"{r['variant']} {r['file'].removeprefix('onnx_')}", (r[key], 100 * r["acc"]), fontsize=7,
                        xytext=(3, -9), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    fig.suptitle("all-MiniLM-L6-v2 on the emotion data: every file measured (red: the Pareto frontier)")
    fig.savefig(dest, dpi=110)
    return dest
