"""Where the rows of a sweep run: in-process (default), local processes, or a Ray cluster.

Every executor has the same two verbs: `map_baselines` (train or load each seed's baseline)
and `map_rows` (run (variant, seed) rows, yielding each result as it finishes); the driver
(runner/run.py) alone writes rows into the store. In-process, the variants of a seed share
pipeline prefixes in memory. Local processes (`--jobs N`) train in parallel and time one file at a
time: a worker trains a seed's baseline, then the variants of that seed that share a first step
(sharing their prefixes, as in-process), writes their files and evaluates them (bytes, accuracy);
the driver times every file (latency, memory, cold start) once all training is done, so no
training runs beside a timing. On Ray each row is one
task that loads the seed's baseline, recomputes the variant's whole pipeline, writes its artifacts
and returns its measurements (runner/ray_executor.py, runner/ray_rows.py). Tasks are deterministic
for a given seed (every technique seeds itself), so the numbers are the same either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import signal
import time
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

    from modelshrink.train import cap_threads

    torch.set_num_threads(setup.threads)
    cap_threads(setup.threads)  # train.threads beyond this worker's share of the cores would oversubscribe them
    rows = RowRunner(RunConfig.model_validate_json(setup.cfg_json), Path(setup.out), log=lambda _m: None)
    _WORKER.update(token=setup.token, rows=rows, data=setup.data)


def _baseline_task(seed: int) -> int:
    _WORKER["rows"].baseline(_WORKER["data"], seed)  # trains and caches on disk, or loads the cache
    return seed


def _stages_task(variant_jsons: list[str], seed: int) -> list[tuple[str, Any, float]]:
    """Train the models of variants that share a first step (their prefixes shared, as in-process), write
    their files and evaluate them (bytes, accuracy, checks); the driver times them. Per variant:
    ("evaluated", {"evaluated": RowRunner.evaluate's}, seconds), ("failed", the error row, seconds), or
    ("given", None, seconds) for a given model's row (no steps: nothing to train; the driver measures it, once
    for every seed). Nothing but modelshrink's own dataclasses and plain values travels back: no model."""
    rows, data = _WORKER["rows"], _WORKER["data"]
    cache = {("baseline",): rows.baseline(data, seed)}  # trained by this seed's baseline task, read from the folder
    out: list[tuple[str, Any, float]] = []
    for vj in variant_jsons:
        t0 = time.perf_counter()
        variant = VariantConfig.model_validate_json(vj)
        if rows.as_given(variant, cache[("baseline",)]):
            out.append(("given", None, time.perf_counter() - t0))
            continue
        status, built = rows.stage(data, variant, seed, cache)
        if status == "ok":
            status, built = rows.evaluate(data, variant, seed, cache, built)
        out.append((status, built, time.perf_counter() - t0))
    return out


def prefix_groups(tasks: list[RowTask]) -> list[list[int]]:
    """Indices into `tasks`: the rows of each seed grouped by the start and first step their pipelines share."""
    groups: dict[tuple[int, str, str], list[int]] = {}
    for i, (v, s) in enumerate(tasks):
        first = v.steps[0].model_dump_json() if v.steps else ""
        groups.setdefault((s, v.start, first), []).append(i)
    return list(groups.values())


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


def _process_failure(err: BaseException, timeout_s: float | None, what: str = "this row") -> RowResult:
    """A row whose worker died or overran --row-timeout: failed, naming the cause (a rerun retries it)."""
    import pebble

    if isinstance(err, pebble.ProcessExpired):
        return "failed", {"error": f"worker lost: the worker process {_death(err.exitcode)} while running {what}; "
                                   "rerun with --out on this folder to retry it"}  # fmt: skip
    if isinstance(err, cf.TimeoutError):
        return "failed", {"error": f"row timed out after --row-timeout {timeout_s:g} s and was stopped ({what}); "
                                   "raise --row-timeout, or rerun with --out on this folder to retry it"}  # fmt: skip
    return _lost(err)


def _setup(rows: RowRunner, data: TaskData, jobs: int) -> WorkerSetup:
    return WorkerSetup(rows.cfg.model_dump_json(), str(rows.folder.out), data, threads_per_worker(jobs),
                       uuid.uuid4().hex)  # fmt: skip


class ProcessExecutor(Executor):
    """`--jobs N`: N local worker processes train; this process measures (spawned, never forked:
    forking a process that has started torch's thread pools can deadlock).

    Each seed's baseline trains in a worker; as soon as it is ready, the variants of that seed go to
    the workers in groups that share a first step (prefix_groups), so a pruned model is fine-tuned once
    for `pruned` and `pruned-int8`. The worker writes each model's files and evaluates them; this
    process times them (runner/timing.py) one at a time after the last worker finished: no training
    runs while a file is timed. An interrupted run keeps the rows already measured; a rerun retrains the rest.

    pebble's pool replaces a worker that dies (killed, out of memory) and fails only the rows of the
    task it was running; `row_timeout_s` stops a task that runs longer (its worker is replaced too).
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
        """Nothing here: map_rows trains each seed's baseline, so its rows start as soon as it is ready."""
        return iter(())

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        pool = self._pool_for(rows, data)
        groups = prefix_groups(tasks)
        pending: dict[Any, tuple[str, Any]] = {pool.schedule(_baseline_task, args=(s,)): ("baseline", s)
                                               for s in dict.fromkeys(s for _, s in tasks)}  # fmt: skip
        built: dict[int, tuple[str, Any, float]] = {}  # task index -> what its worker built
        trained = 0
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                kind, what = pending.pop(fut)
                seed_groups = [g for g in groups if tasks[g[0]][1] == what] if kind == "baseline" else [what]
                try:
                    result = fut.result()
                except Exception as err:  # the worker died or overran: these rows fail, the others go on
                    n = sum(map(len, seed_groups))
                    failure = _process_failure(err, self.row_timeout_s, f"seed {what}'s baseline" if kind == "baseline"
                                               else f"the task training {n} row(s) that share a first step")  # fmt: skip
                    yield from ((tasks[i], failure) for g in seed_groups for i in g)
                    continue
                if kind == "baseline":  # the seed's rows go to the workers now
                    rows.log(f"seed {what}: baseline ready")
                    for g in seed_groups:
                        args = ([tasks[i][0].model_dump_json() for i in g], what)
                        pending[pool.schedule(_stages_task, args=args, timeout=self.row_timeout_s)] = ("stages", g)
                    continue
                trained += len(what)
                names = ", ".join(tasks[i][0].name for i in what)
                rows.log(f"{names} seed {tasks[what[0]][1]}: trained and evaluated in {sum(r[2] for r in result):.0f} s "
                         f"({trained} of {len(tasks)} rows trained)")  # fmt: skip
                for i, (status, stage, seconds) in zip(what, result, strict=True):
                    if status == "failed":
                        yield tasks[i], (status, {**stage, "wall_s": round(seconds, 2)})
                    else:
                        built[i] = (status, stage, seconds)
        if built:
            rows.log(f"training done; timing the files of {len(built)} rows here, one seed at a time")
        yield from self._measure(rows, data, tasks, built)

    def _measure(self, rows: RowRunner, data: TaskData, tasks: list[RowTask],
                 built: dict[int, tuple[str, Any, float]]) -> Iterator[tuple[RowTask, RowResult]]:  # fmt: skip
        """Every row a worker trained, finished here seed by seed (no worker is busy now): a seed's evaluated rows
        are timed together (their memory probes pair across rows: runner/timing.py) and committed as that seed's
        timing ends; a given model's row is measured here."""
        threads = min(rows.cfg.train.threads, threads_per_worker(self.jobs))  # as cap_threads did in the workers
        for s in dict.fromkeys(tasks[i][1] for i in sorted(built)):
            mine = [i for i in sorted(built) if tasks[i][1] == s]
            cache = {("baseline",): rows.baseline(data, s)}  # from the run folder (and a file.py model's module loaded)
            by_view: dict[str, list[int]] = {}  # rows evaluated on the same encoding of the data are timed together
            for i in mine:
                if built[i][0] == "evaluated":
                    by_view.setdefault(built[i][1]["evaluated"].view, []).append(i)
            for group in by_view.values():
                for i, (status, result) in zip(group, rows.finish_many(data, [built[i][1]["evaluated"] for i in group]),
                                               strict=True):  # fmt: skip
                    result.update(wall_s=round(result["wall_s"] + built[i][2], 2), train_threads=threads)
                    yield tasks[i], (status, result)  # worker's seconds + its share of the timing here
            for i in mine:
                if built[i][0] != "given":
                    continue
                v, seconds = tasks[i][0], built[i][2]
                status, result = rows.run(data, v, s, cache)  # a given model: built from the baseline, no training
                result.update(wall_s=round(result["wall_s"] + seconds, 2), train_threads=threads)
                yield (v, s), (status, result)
        built.clear()

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
