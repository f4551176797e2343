"""Pareto frontiers from the store: file bytes vs accuracy, latency vs accuracy.

A point is on the frontier when no other point is at least as good on both axes and better
on one (lower cost, higher accuracy). Written by hand: it is a sort and one pass (O(n log n)),
smaller than any dependency that offers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelshrink.report.tables import aggregate


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of (cost, accuracy) pairs, by increasing cost.

    Lower cost and higher accuracy are better; of exact duplicates only the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:  # more accurate than everything at most as costly
            front.append(i)
            best = points[i][1]
    return front


def frontier(
    rows: list[dict[str, Any]], cost: str = "file_bytes", value: str = "test_accuracy"
) -> list[dict[str, Any]]:
    """The variants (means over their seeds) on the cost-vs-accuracy frontier of a store's rows.

    Each entry: variant, seeds, the cost's and the value's mean (under their own names).
    """
    entries = [a for a in aggregate(rows) if a["seeds"] and a.get(cost) and a.get(value)]
    points = [(a[cost][0], a[value][0]) for a in entries]
    return [{"variant": entries[i]["variant"], "seeds": entries[i]["seeds"], cost: points[i][0], value: points[i][1]}
            for i in pareto_front(points)]  # fmt: skip
