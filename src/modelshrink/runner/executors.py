"""Where the rows of a sweep run: in-process (default), local processes, or a Ray cluster.

Every executor has the same two verbs: `map_baselines` (train or load each seed's baseline)
and `map_rows` (run (variant, seed) rows, yielding each result as it finishes); the driver
(runner/run.py) alone writes rows into the store. In-process, the variants of a seed share
pipeline prefixes in memory. Elsewhere each row is one task: it loads the seed's baseline from
the run folder (trained first, once, by a baseline task), recomputes the variant's whole
pipeline, writes its artifacts and returns its measurements. Tasks are deterministic for a
given seed (every technique seeds itself), so the numbers are the same either way.

Ray is imported only when asked for: `import modelshrink` and the CLI stay light.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ConfigError
from modelshrink.runner.pipeline import Cache
from modelshrink.runner.task import RowResult, RowRunner

RowTask = tuple[VariantConfig, int]
RAY_CONNECT_TIMEOUT_S = 5.0  # a TCP probe of the head before ray.init, which can wait minutes on its own


def threads_per_worker(jobs: int) -> int:
    """Split the machine's cores between the workers, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // jobs)


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


PREFIXES_KEPT = 48  # models a kept prefix cache holds besides the baseline (the reference LSTM: ~1.4 MB each)


def _trim(cache: Cache, keep: int) -> None:
    """Drop the oldest prefixes beyond `keep` (the baseline stays)."""
    for key in [k for k in cache if k != ("baseline",)][: -keep or None]:
        del cache[key]


class Executor:
    """In-process (the default): rows run in this process, seed by seed; the variants of a seed
    share pipeline prefixes through an in-memory cache."""

    name = "inprocess"
    # Set to {} to keep each seed's pipeline prefixes across map_rows calls (search: one call per batch of
    # trials), so a trial reuses a prefix an earlier batch fine-tuned; None: dropped after each call.
    prefixes: dict[tuple[str, int], Cache] | None = None

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        """Train (or load) each seed's baseline ahead of its rows; yields each seed when it is ready.

        In-process this yields nothing: a seed's baseline trains when its rows start (in `map_rows`),
        so the first rows are in the store before the next seed's baseline trains.
        """
        return iter(())

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        """Run the rows; yields each (task, result) as it finishes, in any order."""
        for seed in dict.fromkeys(s for _, s in tasks):
            cache = self._prefix_cache(rows, data, seed)  # this seed's pipeline prefixes
            for variant, _ in (t for t in tasks if t[1] == seed):
                yield (variant, seed), rows.run(data, variant, seed, cache)
            _trim(cache, PREFIXES_KEPT)

    def _prefix_cache(self, rows: RowRunner, data: TaskData, seed: int) -> Cache:
        if self.prefixes is None:
            return {("baseline",): rows.baseline(data, seed)}
        key = (rows.cfg.model_dump_json(exclude={"variants"}), seed)  # the same experiment and seed only
        if key not in self.prefixes:
            self.prefixes[key] = {("baseline",): rows.baseline(data, seed)}
        return self.prefixes[key]

    def close(self) -> None:
        """Release workers or the cluster connection."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _probe(address: str) -> None:
    """Fail fast on an unreachable head: ray.init(address=...) itself retries for minutes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be HOST:PORT (e.g. head-node:6379), 'auto' or 'local', got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address!r} ({err or 'timed out'} after {RAY_CONNECT_TIMEOUT_S:.0f} s); "
            "start one with `ray start --head`, or pass --ray-address local for a local instance"
        ) from err


class RayExecutor(Executor):
    """`--executor ray`: each row one Ray task; results come back to the driver, which stores them.

    `address` None or "local" starts a local Ray instance for the run (loopback only, no
    dashboard); "auto" or HOST:PORT joins a running cluster. On a cluster of several machines
    the run folder must be on a file system every node sees (baselines and artifacts go there),
    and modelshrink must be installed on every node.
    """

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None) -> None:
        if jobs is not None and jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                "--executor ray needs Ray, which is not installed: pip install 'modelshrink[ray]'"
            ) from err
        self._ray = ray
        self.jobs = jobs or (os.cpu_count() or 1)
        local = address in (None, "", "local")
        if not local and address != "auto":
            _probe(address)  # type: ignore[arg-type]
        try:
            if local:
                ray.init(num_cpus=self.jobs, include_dashboard=False, _node_ip_address="127.0.0.1",
                         log_to_driver=False, configure_logging=False)  # fmt: skip
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            if local:
                raise ConfigError(f"could not start a local Ray instance: {err}") from err
            raise ConfigError(
                f"cannot reach a Ray cluster at {address!r} ({err}); start one with `ray start --head`, "
                "or pass --ray-address local for a local instance"
            ) from err
        if not local:
            self.jobs = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._setup_ref: Any = None

    def _tasks(self, rows: RowRunner, data: TaskData) -> tuple[Any, Any, Any]:
        ray = self._ray
        if self._setup_ref is None:
            self._setup_ref = ray.put(_setup(rows, data, self.jobs))
        return self._setup_ref, ray.remote(num_cpus=1)(_ray_baseline), ray.remote(num_cpus=1)(_ray_row)

    def _as_completed(self, refs: dict[Any, Any], rows: bool = False) -> Iterator[tuple[Any, Any]]:
        pending = list(refs)
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            try:
                yield refs[done[0]], self._ray.get(done[0])
            except self._ray.exceptions.RayError as err:  # a worker or node died: a failed row
                if not rows:
                    raise
                yield refs[done[0]], _lost(err)

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        setup, baseline, _ = self._tasks(rows, data)
        for _, seed in self._as_completed({baseline.remote(setup, s): s for s in seeds}):
            yield seed

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        setup, _, row = self._tasks(rows, data)
        yield from self._as_completed({row.remote(setup, v.model_dump_json(), s): (v, s) for v, s in tasks}, rows=True)

    def close(self) -> None:
        self._ray.shutdown()


def _ray_baseline(setup: WorkerSetup, seed: int) -> int:
    _init_worker(setup)
    return _baseline_task(seed)


def _ray_row(setup: WorkerSetup, variant_json: str, seed: int) -> RowResult:
    _init_worker(setup)
    return _row_task(variant_json, seed)


def make_executor(
    executor: str, jobs: int | None, ray_address: str | None, row_timeout_s: float | None = None
) -> Executor:
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
        return RayExecutor(ray_address, jobs)
    if ray_address is not None:
        raise ConfigError("--ray-address needs --executor ray")
    if executor not in ("inprocess", "processes"):
        raise ConfigError(f"unknown --executor {executor!r}; known: inprocess, processes, ray")
    if row_timeout_s is not None:
        return ProcessExecutor(jobs or 1, row_timeout_s)
    if jobs is None or (jobs == 1 and executor == "inprocess"):
        return Executor()
    return ProcessExecutor(jobs)
