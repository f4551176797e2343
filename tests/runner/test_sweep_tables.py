"""Error bars, changes against the same seed's baseline, and the Pareto frontier, from store rows."""

import pytest
from scipy import stats

from modelshrink.report.pareto import frontier, pareto_front
from modelshrink.report.tables import accuracy_changes, aggregate, ci95


def _row(variant: str, seed: int, acc: float, size: int, steps: list | None = None) -> dict:
    return {"variant": variant, "seed": seed, "status": "ok", "export_format": "fp32", "test_accuracy": acc,
            "val_accuracy": acc, "file_bytes": size, "latency_ms_p50": size / 1000,
            "config": {"variant": {"name": variant, "steps": steps if steps is not None else [{"kind": "x"}]}}}  # fmt: skip


def test_ci95_is_the_t_interval() -> None:
    values = [0.80, 0.84, 0.82]
    lo, hi = ci95(values)  # type: ignore[misc]
    half = stats.t.ppf(0.975, 2) * stats.tstd(values) / 3**0.5  # 4.303 * s / sqrt(n)
    assert (lo, hi) == pytest.approx((0.82 - half, 0.82 + half))
    assert ci95([0.5]) is None


def test_changes_are_against_the_same_seeds_baseline() -> None:
    rows = [_row("baseline", 0, 0.90, 100, []), _row("baseline", 1, 0.80, 100, []),
            _row("pruned", 0, 0.89, 50), _row("pruned", 1, 0.78, 50), _row("pruned", 2, 0.5, 50)]  # fmt: skip
    ch = accuracy_changes(rows)
    assert ch["pruned"] == pytest.approx({0: -0.01, 1: -0.02})  # seed 2 has no baseline: left out
    entry = next(a for a in aggregate(rows) if a["variant"] == "pruned")
    assert entry["test_accuracy_change"] == pytest.approx((-0.015, stats.tstd([-0.01, -0.02])))
    assert entry["test_accuracy_change_ci95"] is not None and entry["ci95"]["test_accuracy"] is not None


def test_superseded_rows_are_left_out() -> None:
    old = {**_row("pruned", 0, 0.1, 50), "superseded": True}
    assert [a["variant"] for a in aggregate([_row("baseline", 0, 0.9, 100, []), old])] == ["baseline"]


def test_pareto_front() -> None:
    pts = [(100, 0.90), (50, 0.89), (50, 0.85), (70, 0.88), (30, 0.80), (30, 0.80), (200, 0.90)]
    assert pareto_front(pts) == [4, 1, 0]  # by increasing cost; dominated and duplicate points dropped
    assert pareto_front([]) == []
    rows = [_row("baseline", 0, 0.90, 100, []), _row("pruned", 0, 0.89, 50), _row("big", 0, 0.85, 150)]
    assert [f["variant"] for f in frontier(rows)] == ["pruned", "baseline"]
    assert [f["variant"] for f in frontier(rows, cost="latency_ms_p50")] == ["pruned", "baseline"]
