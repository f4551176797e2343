import time

import numpy as np
import pytest

from modelshrink.measure.latency import latency_ms


def test_latency_times_one_unpadded_row_per_call() -> None:
    x = np.array([[0, 0, 5, 6], [0, 7, 8, 9], [1, 2, 3, 4]], dtype=np.int64)
    seen: list[tuple[int, ...]] = []

    def predict(row: np.ndarray) -> None:
        seen.append(row.shape)
        time.sleep(0.001)

    out = latency_ms(predict, x, runs=9, warmup=3)
    assert len(seen) == 12  # warm-up + timed runs
    assert seen[3:6] == [(1, 2), (1, 3), (1, 4)]  # each row trimmed to its own length
    assert 1.0 <= out["latency_ms_p50"] <= out["latency_ms_p90"] < 50


def test_timed_runs_is_time_bounded_with_a_minimum_of_runs() -> None:
    from modelshrink.measure.latency import latency_batches, timed_runs

    x = np.arange(1, 41, dtype=np.int64).reshape(10, 4)
    batches = latency_batches(x, 3, count=4)
    assert [b.shape for b in batches] == [(3, 4)] * 4 and batches[3][0, 0] == x[9, 0]  # rows cycle
    calls: list[int] = []

    def slow(b: np.ndarray) -> None:
        calls.append(len(b))
        time.sleep(0.01)

    out = timed_runs(slow, batches, budget_s=0.0, min_runs=5, warmup=2)
    assert out["runs"] == 5 and len(calls) == 7  # warm-up calls are not timed
    assert 10 <= out["median_ms"] <= out["p90_ms"] < 200
    assert out["samples_per_s"] == pytest.approx(3 / (out["median_ms"] / 1e3))
    fast = timed_runs(lambda b: None, batches, budget_s=0.01, max_runs=300)
    assert fast["runs"] == 300  # a fast call hits the cap, not the budget
