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


def timed_runs(
    predict: Callable[[np.ndarray], object], batches: list[np.ndarray], budget_s: float = 0.25, min_runs: int = 5,
    max_runs: int = 2000, warmup: int = 3,
) -> dict[str, float]:  # fmt: skip
    """Median and p90 ms of `predict` over `batches` (cycled), after `warmup` calls.

    Time-bounded: runs until `budget_s` seconds of timed calls, at least `min_runs` and at
    most `max_runs`, so a 30 µs call gets thousands of samples and a 30 ms call a handful.
    Returns median_ms, p90_ms, samples_per_s (batch rows / median) and runs.
    """
    for i in range(warmup):  # first calls allocate and pick kernels
        predict(batches[i % len(batches)])
    times: list[float] = []
    spent = 0.0
    while len(times) < max_runs and (len(times) < min_runs or spent < budget_s):
        batch = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    median = float(np.median(times))
    rows = float(np.mean([len(b) for b in batches]))
    return {"median_ms": median * 1e3, "p90_ms": float(np.percentile(times, 90) * 1e3),
            "samples_per_s": rows / median if median > 0 else float("inf"), "runs": len(times)}  # fmt: skip


def latency_batches(x: np.ndarray, batch: int, count: int = 16) -> list[np.ndarray]:
    """Inputs for `timed_runs`: `count` batches of `batch` test rows (token rows trimmed, as `latency_ms`)."""
    n = len(x)
    return [trimmed(x, (np.arange(batch) + i * batch) % n) for i in range(count)]


# -- the GPU ---------------------------------------------------------------------------------------
CUDA_PROVIDER = "CUDAExecutionProvider"


def gpu_latency_provider(device: str) -> str | None:
    """The ONNX Runtime execution provider to time ONNX files with on the GPU as well, or None (then the rows
    have no GPU figures: absent, never zero). CUDA when the run's resolved device (`--device cuda`, or `auto`
    on a machine with a GPU) is a CUDA GPU and onnxruntime offers CUDAExecutionProvider (onnxruntime-gpu)."""
    if not device.startswith("cuda"):
        return None
    import onnxruntime as ort

    return CUDA_PROVIDER if CUDA_PROVIDER in ort.get_available_providers() else None


def gpu_runner(path: str, provider: str) -> Callable[[np.ndarray], object] | None:
    """One ONNX Runtime call on the GPU per input batch (host → device copies included, as an app sees them);
    None when the session did not get `provider` (e.g. CUDA libraries missing: ORT falls back to the CPU)."""
    import onnxruntime as ort

    if provider not in ort.get_available_providers():  # ORT would warn and run on the CPU
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=[provider, "CPUExecutionProvider"])
    if provider not in session.get_providers():
        return None
    name = session.get_inputs()[0].name
    return lambda xb: session.run(None, {name: xb})
