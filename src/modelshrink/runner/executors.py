"""Where the rows of a sweep run: in-process (default), local processes, or a Ray cluster.

Every executor has the same two verbs: `map_baselines` (train or load each seed's baseline)
and `map_rows` (run (variant, seed) rows, yielding each result as it finishes); the driver
(runner/run.py) alone writes rows into the store. In-process, the variants of a seed share
pipeline prefixes in memory. Elsewhere each row is one task: it loads the seed's baseline
(trained first, once, by a baseline task), recomputes the variant's whole pipeline, writes its
artifacts and returns its measurements. Local processes share the run folder with the driver;
Ray tasks share no disk with it (runner/ray_executor.py, runner/ray_rows.py). Tasks are
deterministic for a given seed (every technique seeds itself), so the numbers are the same either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ConfigError
from modelshrink.runner.executor_base import Executor, RowTask, threads_per_worker
from modelshrink.runner.ray_executor import RayExecutor
from modelshrink.runner.task import RowResult, RowRunner

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "RowTask", "make_executor", "threads_per_worker"]


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, sent once per worker (not per task)."""

    cfg_json: str
    out: str
    data: TaskData
    threads: int
    token: str  # identifies this run's setup, so a reused (Ray) worker re-initialises for a new one


_WORKER: dict[str, Any] = {}


def _init_worker(setup: WorkerSetup) -> None:
    if _WORKER.get("token") == setup.token:
        return
    import torch

    torch.set_num_threads(setup.threads)
    rows = RowRunner(RunConfig.model_validate_json(setup.cfg_json), Path(setup.out), log=lambda _m: None)
    _WORKER.update(token=setup.token, rows=rows, data=setup.data)


def _baseline_task(seed: int) -> int:
    _WORKER["rows"].baseline(_WORKER["data"], seed)  # trains and caches on disk, or loads the cache
    return seed


def _row_task(variant_json: str, seed: int) -> RowResult:
    rows, data = _WORKER["rows"], _WORKER["data"]
    variant = VariantConfig.model_validate_json(variant_json)
    return rows.run(data, variant, seed, {("baseline",): rows.baseline(data, seed)})  # baseline from the folder


def _lost(err: BaseException) -> RowResult:
    """The row of a task whose worker died: failed, with why (rerunning the folder retries it)."""
    return "failed", {"error": f"worker lost: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def _death(code: int | None) -> str:
    """Why a worker process ended, from its exit code (negative: the signal that killed it)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        oom = " (the kernel's out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{oom}"
    return f"exited with code {code}"


def _process_failure(err: BaseException, timeout_s: float | None) -> RowResult:
    """A row whose worker died or overran --row-timeout: failed, naming the cause (a rerun retries it)."""
    import pebble

    if isinstance(err, pebble.ProcessExpired):
        return "failed", {"error": f"worker lost: the worker process {_death(err.exitcode)} while running this row; "
                                   "rerun with --out on this folder to retry it"}  # fmt: skip
    if isinstance(err, cf.TimeoutError):
        return "failed", {"error": f"row timed out after --row-timeout {timeout_s:g} s and was stopped; "
                                   "raise --row-timeout, or rerun with --out on this folder to retry it"}  # fmt: skip
    return _lost(err)


def _setup(rows: RowRunner, data: TaskData, jobs: int) -> WorkerSetup:
    return WorkerSetup(rows.cfg.model_dump_json(), str(rows.folder.out), data, threads_per_worker(jobs),
                       uuid.uuid4().hex)  # fmt: skip


class ProcessExecutor(Executor):
    """`--jobs N`: N local worker processes (spawned, never forked: forking a process that has
    started torch's thread pools can deadlock).

    pebble's pool replaces a worker that dies (killed, out of memory) and fails only the task it
    was running; `row_timeout_s` stops a row that runs longer (its worker is replaced too).
    """

    name = "processes"

    def __init__(self, jobs: int, row_timeout_s: float | None = None) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}; use --jobs 1 to run one row at a time")
        _check_timeout(row_timeout_s)
        self.jobs, self.row_timeout_s = jobs, row_timeout_s
        self._pool: Any = None

    def _pool_for(self, rows: RowRunner, data: TaskData) -> Any:
        import pebble

        if self._pool is None:
            setup = _setup(rows, data, self.jobs)
            self._pool = pebble.ProcessPool(self.jobs, initializer=_init_worker, initargs=(setup,),
                                            context=multiprocessing.get_context("spawn"))  # fmt: skip
        return self._pool

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        pool = self._pool_for(rows, data)
        for fut in cf.as_completed([pool.schedule(_baseline_task, args=(s,)) for s in seeds]):
            yield fut.result()

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        pool = self._pool_for(rows, data)
        futures = {pool.schedule(_row_task, args=(v.model_dump_json(), s), timeout=self.row_timeout_s): (v, s)
                   for v, s in tasks}  # fmt: skip
        for fut in cf.as_completed(futures):  # committed by the driver as each finishes
            try:
                result = fut.result()
            except Exception as err:  # the worker died or overran: this row fails, the others go on
                result = _process_failure(err, self.row_timeout_s)
            yield futures[fut], result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()  # workers still running (an interrupted sweep) are terminated
            self._pool.join()
            self._pool = None


def _check_timeout(row_timeout_s: float | None) -> None:
    if row_timeout_s is not None and not (row_timeout_s > 0 and row_timeout_s < float("inf")):
        raise ConfigError(f"--row-timeout must be a positive number of seconds, got {row_timeout_s}; e.g. 3600")


def make_executor(
    executor: str, jobs: int | None, ray_address: str | None, row_timeout_s: float | None = None,
    row_retries: int | None = None, artifacts: str | None = None,
) -> Executor:  # fmt: skip
    """The executor the CLI flags ask for; checks the flags before anything starts.

    A --row-timeout needs rows in worker processes that can be stopped: without --jobs it runs
    them in one worker process.
    """
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}; use --jobs 1 to run one row at a time")
    _check_timeout(row_timeout_s)
    if executor == "ray":
        if row_timeout_s is not None:
            raise ConfigError("--row-timeout works with local processes only; drop it, or use --executor processes")
        return RayExecutor(ray_address, jobs, row_retries, artifacts)
    for flag, value in (("--ray-address", ray_address), ("--row-retries", row_retries), ("--artifacts", artifacts)):
        if value is not None:
            raise ConfigError(f"{flag} needs --executor ray")
    if executor not in ("inprocess", "processes"):
        raise ConfigError(f"unknown --executor {executor!r}; known: inprocess, processes, ray")
    if row_timeout_s is not None:
        return ProcessExecutor(jobs or 1, row_timeout_s)
    if jobs is None or (jobs == 1 and executor == "inprocess"):
        return Executor()
    return ProcessExecutor(jobs)
