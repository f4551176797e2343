import time

import numpy as np

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
