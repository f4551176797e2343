"""Latency of one prediction, measured on the artifact a user deploys.

Single-input latency is what a phone or watch app sees: one sentence (or image) at a time,
no batching, a fixed thread count, after a warm-up. We report the median and the 90th
percentile over real inputs from the test split, in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from modelshrink.measure.accuracy import trimmed


def latency_ms(
    predict: Callable[[np.ndarray], object], x: np.ndarray, runs: int = 300, warmup: int = 30
) -> dict[str, float]:
    """p50/p90 wall time of `predict` on one row at a time (the first `runs` rows, cycled).

    Token rows are trimmed to their own length, as a deployed app feeds one unpadded sentence.
    """
    rows = [trimmed(x, np.array([i % len(x)])) for i in range(max(runs, 1))]
    for row in rows[:warmup]:  # first calls allocate and pick kernels
        predict(row)
    times = np.empty(len(rows))
    for i, row in enumerate(rows):
        t0 = time.perf_counter()
        predict(row)
        times[i] = time.perf_counter() - t0
    return {"latency_ms_p50": float(np.median(times) * 1e3), "latency_ms_p90": float(np.percentile(times, 90) * 1e3)}
