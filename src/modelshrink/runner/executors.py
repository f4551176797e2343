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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ConfigError
from modelshrink.runner.ray_rows import (
    RaySetup,
    baseline_task,
    check_artifact_uri,
    fetch_files,
    node_info,
    read_files,
    remove_staging,
    row_task,
    stage_task,
    write_files,
)
from modelshrink.runner.task import RowResult, RowRunner

RowTask = tuple[VariantConfig, int]
RAY_CONNECT_TIMEOUT_S = 5.0  # a TCP probe of the head before ray.init, which can wait minutes on its own
ROW_RETRIES = 3  # --row-retries default: Ray reruns a task whose worker or node died at most this often
GPUS_PER_ROW = 0.5  # --device cuda on Ray: each row task's share of a GPU (tiny models: two rows per GPU)


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


class Executor:
    """In-process (the default): rows run in this process, seed by seed; the variants of a seed
    share pipeline prefixes through an in-memory cache."""

    name = "inprocess"

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        """Train (or load) each seed's baseline ahead of its rows; yields each seed when it is ready.

        In-process this yields nothing: a seed's baseline trains when its rows start (in `map_rows`),
        so the first rows are in the store before the next seed's baseline trains.
        """
        return iter(())

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        """Run the rows; yields each (task, result) as it finishes, in any order."""
        for seed in dict.fromkeys(s for _, s in tasks):
            cache = {("baseline",): rows.baseline(data, seed)}  # this seed's pipeline prefixes, dropped after its rows
            for variant, _ in (t for t in tasks if t[1] == seed):
                yield (variant, seed), rows.run(data, variant, seed, cache)

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
    dashboard); "auto" or HOST:PORT joins a running cluster. Nodes share no disk with the driver:
    tasks get the config, data, baseline (and the user's --weights) from Ray's object store and
    send their files back, in their result or through `artifacts` (an fsspec URI every node and
    the driver reach); the driver writes them into the run folder (runner/ray_rows.py).

    A task whose worker or node dies is retried by Ray, at most `row_retries` times (on another
    node when its node is gone); then its row fails with the reason. With `--device cuda` a row's
    task asks for `gpus_per_row` of a GPU and only builds the model; the driver measures its files.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, jobs: int | None = None, row_retries: int | None = None,
        artifacts: str | None = None, gpus_per_row: float = GPUS_PER_ROW,
    ) -> None:  # fmt: skip
        if jobs is not None and jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        if row_retries is not None and row_retries < 0:
            raise ConfigError(f"--row-retries must be 0 or more, got {row_retries}; e.g. {ROW_RETRIES}")
        if not 0 < gpus_per_row <= 1:
            raise ConfigError(f"gpus_per_row must be in (0, 1], got {gpus_per_row}")
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                "--executor ray needs Ray, which is not installed: pip install 'modelshrink[ray]'"
            ) from err
        if artifacts is not None:
            check_artifact_uri(artifacts)
        self._ray = ray
        self.jobs = jobs or (os.cpu_count() or 1)
        self.row_retries = ROW_RETRIES if row_retries is None else row_retries
        self.artifacts, self.gpus_per_row = artifacts, gpus_per_row
        self._connect(address, jobs)
        self._run: _RayRun | None = None

    def _connect(self, address: str | None, jobs: int | None) -> None:
        ray = self._ray
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

    def _prepare(self, rows: RowRunner, data: TaskData) -> _RayRun:
        """The run's setup, data and --weights put into the object store once; the remote functions."""
        if self._run is not None:
            return self._run
        ray, cfg = self._ray, rows.cfg
        gpu = cfg.train.device == "cuda"
        if gpu and not ray.cluster_resources().get("GPU"):
            raise ConfigError("--device cuda, but the Ray cluster has no GPU; add GPU nodes, or use --device cpu")
        weights = cfg.model.weights
        setup = RaySetup(cfg.model_dump_json(), threads_per_worker(self.jobs), uuid.uuid4().hex, self.artifacts,
                         Path(weights).name if weights else None)  # fmt: skip
        shared = (ray.put(setup), ray.put(data), ray.put(Path(weights).read_bytes()) if weights else None)
        # Retries are for dead workers and nodes only (a failing variant is a failed row, not retried).
        opts = {"num_cpus": 1, "max_retries": self.row_retries, "retry_exceptions": False}
        gpus = {"num_gpus": self.gpus_per_row} if gpu else {}
        self._run = _RayRun(setup, shared, gpu, ray.remote(**opts, **gpus)(baseline_task),
                            ray.remote(**opts, **gpus)(stage_task if gpu else row_task))  # fmt: skip
        return self._run

    def _finished(self, refs: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
        """(what each ref stands for, its value or the RayError) as each finishes."""
        pending = list(refs)
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            try:
                out = self._ray.get(done[0])
            except self._ray.exceptions.RayError as err:
                out = err
            yield refs[done[0]], out

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        run, root = self._prepare(rows, data), rows.folder.out
        pending = {}
        for seed in seeds:
            folder = rows.folder.baseline_dir(data, seed)
            if (folder / "model.safetensors").is_file():  # cached by an earlier run: sent from the driver's folder
                run.baselines[seed] = self._ray.put(read_files(root, folder))
                yield seed
            else:
                pending[run.baseline.remote(*run.shared, seed)] = seed
        for seed, out in self._finished(pending):
            if isinstance(out, self._ray.exceptions.RayTaskError):
                raise out  # the baseline itself failed (bad data, a bug): as in-process, the run stops
            if isinstance(out, BaseException):  # its worker or node died `row_retries` times: its rows fail
                run.lost[seed] = _ray_lost("the baseline's task", out, self.row_retries)
                continue
            files = fetch_files(run.setup, out)
            write_files(root, files)  # the driver's run folder gets the baseline cache, as in-process
            run.baselines[seed] = self._ray.put(files)
            yield seed

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        run = self._prepare(rows, data)
        pending = {}
        for v, s in tasks:
            if s in run.lost:
                yield (v, s), ("failed", {"error": run.lost[s]})
            else:
                pending[run.row.remote(*run.shared, run.baselines[s], v.model_dump_json(), s)] = (v, s)
        sent: set[tuple[str, int]] = set()
        for (v, s), out in self._finished(pending):
            if (v.name, s) in sent:  # each row once, whatever Ray did
                continue
            sent.add((v.name, s))
            yield (v, s), self._row_result(rows, data, v, s, out)

    def _row_result(self, rows: RowRunner, data: TaskData, v: VariantConfig, s: int, out: Any) -> RowResult:
        """The driver's part of a row: its files into the run folder (or, with --device cuda, its files
        written and measured here)."""
        run = self._run
        assert run is not None  # internal: map_rows prepared it
        if isinstance(out, BaseException):
            return "failed", {"error": _ray_lost("its task", out, self.row_retries)}
        if not run.gpu:
            status, result, files = out
            write_files(rows.folder.out, fetch_files(run.setup, files))
            return status, result
        status, stage, where = out
        if status != "ok":
            return status, {**stage, "trained_on": where}
        if s not in run.driver_baselines:  # the baseline's model, loaded from the driver's run folder
            run.driver_baselines[s] = rows.baseline(data, s)
        status, result = rows.run(data, v, s, {("baseline",): run.driver_baselines[s]}, stage=stage)
        result.update(trained_on=where, measured_on=node_info(), train_device=where.get("device"))
        return status, result

    def close(self) -> None:
        if self._run is not None:
            remove_staging(self._run.setup)
        self._ray.shutdown()


@dataclass
class _RayRun:
    setup: RaySetup
    shared: tuple[Any, Any, Any]  # refs: setup, data, the user's --weights bytes (or None)
    gpu: bool
    baseline: Any  # remote functions
    row: Any
    baselines: dict[int, Any] = field(default_factory=dict)  # seed → ref of its baseline files
    lost: dict[int, str] = field(default_factory=dict)  # seed → why its baseline never came back
    driver_baselines: dict[int, Any] = field(default_factory=dict)  # --device cuda: for measuring here


def _ray_lost(what: str, err: BaseException, retries: int) -> str:
    first = str(err).splitlines()[0] if str(err) else ""
    return (f"worker lost: {what} failed after {retries} retries ({type(err).__name__}: {first}); "
            "rerun with --out on this folder to retry it, or raise --row-retries")  # fmt: skip


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
