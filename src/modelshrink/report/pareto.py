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


def _primary_ms(row: dict[str, Any], batch: int, threads: str) -> float | None:
    """Median ms of the row's deployable ONNX file at `batch` on 1 or all threads (`ms_<artifact>_b<batch>_t<t>`)."""
    files = row.get("artifacts") or {}
    primary = next((a for a, f in files.items() if a != "onnx" and f == files.get("onnx")), None)
    value = row.get(f"ms_{primary}_b{batch}_t{threads}") if primary else None
    return float(value) if isinstance(value, int | float) else None


def search_figures(row: dict[str, Any]) -> dict[str, Any] | None:
    """What search compares of one finished row; None when the row failed or lacks a figure.

    `bytes`, `val_accuracy`, `test_accuracy`: the deployable file, i.e. the smaller of the compact file
    (weights.msz) and the ONNX file, with that file's own accuracies (a compact file measured before its
    validation accuracy was recorded is not counted). `ms_b1`, `ms_b256` (1 thread) and `ms_b*_tall` (all
    cores): the ONNX file, with its accuracies as `onnx_val_accuracy`, `onnx_test_accuracy`.
    """
    if row.get("status") != "ok":
        return None
    out = {"file": "onnx", "bytes": row.get("file_bytes"), "val_accuracy": row.get("val_accuracy"),
           "test_accuracy": row.get("test_accuracy"), "onnx_val_accuracy": row.get("val_accuracy"),
           "onnx_test_accuracy": row.get("test_accuracy"), "ms_b1": _primary_ms(row, 1, "1"),
           "ms_b256": _primary_ms(row, 256, "1"), "ms_b1_tall": _primary_ms(row, 1, "all"),
           "ms_b256_tall": _primary_ms(row, 256, "all")}  # fmt: skip
    compact, compact_val = row.get("compact_bytes"), row.get("compact_val_accuracy")
    if compact is not None and compact_val is not None and out["bytes"] is not None and compact < out["bytes"]:
        out.update(file="compact", bytes=compact, val_accuracy=compact_val, test_accuracy=row["compact_test_accuracy"])
    if any(out[k] is None for k in ("bytes", "val_accuracy", "ms_b1", "ms_b256")):
        return None
    return out
