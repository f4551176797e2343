"""Timing written files: latency per batch size and thread count, then each file's peak memory and
cold start in a fresh process. The one place a variant's files are timed, after runner/measure.py
wrote and evaluated them: in-process right after, or in the driver once `--jobs` workers have
trained and evaluated (runner/executors.py), so no training runs while a file is timed.

Order: every latency of the variant first, then the memory probes. The probes run
PROBES_AT_ONCE at a time: each is one single-threaded process (OMP and ONNX Runtime at one
thread), so two on two idle cores do not share a core; a latency is never timed beside a probe.
Files already timed in this process (same runtime and bytes) are not timed again (ArtifactCache).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelshrink.data.tasks import TaskData
from modelshrink.export.compact import load_model
from modelshrink.export.onnx import OnnxClassifier
from modelshrink.measure.accuracy import predict_logits
from modelshrink.measure.latency import gpu_runner, latency_batches, timed_runs
from modelshrink.measure.memory import peak_rss_mb
from modelshrink.runner.row import ArtifactRow, thread_counts
from modelshrink.train import torch_predictor

BATCHES = (1, 256)
LATENCY_BUDGET_S = 0.15  # timed seconds per (artifact, batch, threads); 16 per model, ~3 s with warm-ups
MEASURE_MEMORY = True  # one fresh subprocess per artifact (~1 s each, ~3 s for torch)
# Memory probes at once: each is single-threaded, so one per core, and at most two: what was measured to leave
# cold starts and peak memory unchanged (benchmarks/probe_overlap.py, 2 cores; more at once was not measured).
PROBES_AT_ONCE = max(1, min(2, os.cpu_count() or 1))
Logits = Callable[[np.ndarray], np.ndarray]  # every row of a split → (N, labels) logits


@dataclass
class ArtifactCache:
    """Latency and memory of files already measured in this process, by runtime and content hash:
    variants whose files are byte-identical (e.g. int8 of a pruned and of an unpruned prefix that
    rounds the same) are timed once."""

    latency: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Artifact:
    """A written file and how to run it."""

    name: str  # onnx_fp32, ..., compact
    runtime: str  # onnxruntime | torch
    path: Path
    weights: str
    logits: Logits  # for accuracy
    timed: Callable[[int], Callable[[np.ndarray], Any]]  # threads → one call on a latency batch
    memory_input: tuple[tuple[int, ...], str] | None  # (shape, dtype) for the memory child; None: not measured
    # batch sizes timed (a file with a fixed batch size: that one); BATCHES as it is when the file is measured
    batches: tuple[int, ...] = field(default_factory=lambda: BATCHES)


def onnx_artifact(name: str, path: Path, threads: int, adapt: Callable[[np.ndarray], np.ndarray] | None = None,
                  batch: int | None = None) -> Artifact:  # fmt: skip
    """An ONNX file in ONNX Runtime; `adapt` reshapes task rows to the file's input (--onnx input)."""
    clf = OnnxClassifier(path, threads=threads)
    fit = adapt or (lambda x: x)

    def logits(x: np.ndarray) -> np.ndarray:
        if adapt is not None:  # a foreign file: its own input layout, maybe a fixed batch
            return clf.predict_logits(fit(x), batch_size=batch or 256)
        return predict_logits(lambda xb: clf.predict_logits(xb, batch_size=len(xb)), x)

    def timed(n: int) -> Callable[[np.ndarray], Any]:
        c = OnnxClassifier(path, threads=n)
        return lambda xb: c.session.run(None, {c.input_name: fit(xb)})  # the bare runtime call is what is timed

    return Artifact(name, "onnxruntime", path, name.removeprefix("onnx_"), logits, timed, None,
                    (batch,) if batch else BATCHES)  # fmt: skip


def torch_artifact(name: str, path: Path, model: nn.Module, weights: str) -> Artifact:
    """A compact file, loaded back into torch (`model` is what it loaded as)."""
    predict = torch_predictor(model)

    def timed(threads: int) -> Callable[[np.ndarray], Any]:
        def run(xb: np.ndarray) -> Any:
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return predict(xb)
            finally:
                torch.set_num_threads(saved)

        return run

    return Artifact(name, "torch", path, weights, lambda x: predict_logits(predict, x), timed, None)


def runtime_artifact(name: str, path: Path, weights: str, threads: int) -> Artifact:
    """A compact file in the torch-free runtime (modelshrink.runtime: its ONNX graph in ONNX Runtime)."""
    from modelshrink import runtime

    session = runtime.load(path, threads=threads)

    def timed(n: int) -> Callable[[np.ndarray], Any]:
        return runtime.load(path, threads=n).run  # the bare runtime call is what is timed

    def logits(x: np.ndarray) -> np.ndarray:  # batched and trimmed as every ONNX file is evaluated
        return predict_logits(session.logits, x)

    return Artifact(name, "modelshrink.runtime", path, weights, logits, timed, None)


def pte_artifact(name: str, path: Path, weights: str) -> Artifact:
    """A `.pte` program in ExecuTorch's Python runtime (fixed batch: the latency batch is the program's)."""
    from modelshrink.export.executorch import PteClassifier

    clf = PteClassifier(path)
    return Artifact(name, "executorch", path, weights, clf.predict_logits, lambda n: clf.run, None, (clf.shape[0],))


@dataclass(frozen=True)
class FileToTime:
    """How to load one of a row's files again to time it in another process (the driver of `--jobs`)."""

    name: str
    runtime: str
    path: Path
    weights: str
    batches: tuple[int, ...]
    memory_input: tuple[tuple[int, ...], str] | None

    def load(self, threads: int) -> Artifact:
        if self.runtime == "onnxruntime":
            art = onnx_artifact(self.name, self.path, threads)
        elif self.runtime == "torch":
            art = torch_artifact(self.name, self.path, load_model(self.path)[0], self.weights)
        elif self.runtime == "modelshrink.runtime":
            art = runtime_artifact(self.name, self.path, self.weights, threads)
        else:
            art = pte_artifact(self.name, self.path, self.weights)
        art.batches, art.memory_input = self.batches, self.memory_input
        return art


def _key(art: Artifact) -> str:
    return f"{art.runtime}:{hashlib.sha256(art.path.read_bytes()).hexdigest()}"


def gpu_latency(
    art: Artifact, data: TaskData, provider: str | None, cache: ArtifactCache
) -> list[dict[str, Any]] | None:
    """An ONNX file's latency per batch size with ONNX Runtime on the GPU (`provider`); None when there is no
    GPU provider, the file is not run by ONNX Runtime, or the session fell back to the CPU."""
    if provider is None or art.runtime != "onnxruntime":
        return None
    key = f"{provider}:{hashlib.sha256(art.path.read_bytes()).hexdigest()}"
    if key not in cache.latency:
        run = gpu_runner(str(art.path), provider)
        if run is None:
            return None
        cache.latency[key] = [{"batch": b, "provider": provider, **timed_runs(run, latency_batches(data.x_test, b),
                               LATENCY_BUDGET_S, warmup=10)} for b in art.batches]  # fmt: skip
    return cache.latency[key]


def cpu_latency(art: Artifact, data: TaskData, cache: ArtifactCache) -> list[dict[str, Any]]:
    """Median and p90 ms per (batch size, thread count) on the CPU."""
    key = _key(art)
    if key not in cache.latency:
        cache.latency[key] = [
            {"batch": b, "threads": t, **timed_runs(run, latency_batches(data.x_test, b), LATENCY_BUDGET_S,
                                                    warmup=10 if b == 1 else 2)}
            for t in thread_counts() for run in [art.timed(t)] for b in art.batches
        ]  # fmt: skip
    return cache.latency[key]


def time_files(
    files: list[tuple[ArtifactRow, Artifact]], data: TaskData, cache: ArtifactCache, gpu_provider: str | None = None,
    timed: Callable[[str, Callable[[], Any]], Any] = lambda _what, work: work(),
) -> None:  # fmt: skip
    """Fill each row's latency (CPU, and GPU when `gpu_provider` names one) and memory, in place: all latencies
    first, one file at a time, then the memory probes, PROBES_AT_ONCE at a time. `files` may be several
    variants' (their probes then pair across variants). `timed(what, work)` runs each latency (e.g. to log a
    slow one)."""
    for row, art in files:
        row.latency = timed(f"{art.name} latency", lambda art=art: cpu_latency(art, data, cache))
        row.latency_gpu = gpu_latency(art, data, gpu_provider, cache)
    if not MEASURE_MEMORY:
        return
    probed = [(row, art, _key(art)) for row, art in files if art.memory_input is not None]
    todo: dict[str, Artifact] = {}
    for _, art, key in probed:
        if key not in cache.memory:
            todo.setdefault(key, art)  # files with the same bytes: the first is probed
    # The slowest first (a probe in torch imports it: ~2 s, against ~0.2 s for ONNX Runtime), so the others fill
    # the second core meanwhile rather than leave it idle at the end.
    order = sorted(todo, key=lambda key: todo[key].runtime != "torch")
    with cf.ThreadPoolExecutor(PROBES_AT_ONCE) as pool:  # each probe is a subprocess: threads only wait on it
        futures = {key: pool.submit(peak_rss_mb, todo[key].runtime, todo[key].path, *todo[key].memory_input)  # type: ignore[misc]
                   for key in order}  # fmt: skip
        for key, fut in futures.items():
            cache.memory[key] = fut.result()
    for row, _, key in probed:
        row.memory = cache.memory[key]
