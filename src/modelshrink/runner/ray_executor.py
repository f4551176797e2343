"""`--executor ray`: rows as Ray tasks on a cluster that shares no disk with the driver.

The tasks themselves are in runner/ray_rows.py; this is the driver's side: connect, put the run's
setup and data into the object store once, schedule, write each task's files into the run folder.
Ray is imported only when this executor is made: `import modelshrink` and the CLI stay light.
"""

from __future__ import annotations

import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelshrink.config import VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ConfigError
from modelshrink.runner.executor_base import Executor, RowTask
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

RAY_CONNECT_TIMEOUT_S = 5.0  # a TCP probe of the head before ray.init, which can wait minutes on its own
ROW_RETRIES = 3  # --row-retries default: Ray reruns a task whose worker or node died at most this often
GPUS_PER_ROW = 0.5  # --device cuda on Ray: each row task's share of a GPU (tiny models: two rows per GPU)


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


def row_threads(ray: Any, asked: int) -> int:
    """The CPUs (torch threads) a row's task asks for: the config's `train.threads`, so a row computes the
    same numbers as in-process, unless no node has that many CPUs.

    Each task holding its threads matters: two rows training with 2 threads each on a 2-core node made
    every step wait for a descheduled thread, and ran 2.8x slower than one row at a time
    (benchmarks/sweep_overhead.py --cluster, 2026-11-30).
    """
    largest = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0)
    if largest < 1:
        raise ConfigError("the Ray cluster has no node with a CPU for rows; add a worker node with CPUs")
    if asked > largest:
        warnings.warn(
            f"train.threads {asked} is more than the largest Ray node's {largest} CPUs: rows train with {largest} "
            f"(their last digits can differ from an in-process run); set train.threads {largest} to compare",
            stacklevel=2,
        )
    return min(asked, largest)


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
        threads = row_threads(ray, cfg.train.threads)
        setup = RaySetup(cfg.model_dump_json(), threads, uuid.uuid4().hex, self.artifacts,
                         Path(weights).name if weights else None)  # fmt: skip
        shared = (ray.put(setup), ray.put(data), ray.put(Path(weights).read_bytes()) if weights else None)
        # Retries are for dead workers and nodes only (a failing variant is a failed row, not retried).
        # A row holds the CPUs it trains with: no node runs more torch threads than it has cores.
        opts = {"num_cpus": threads, "max_retries": self.row_retries, "retry_exceptions": False}
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
        if run is None:  # map_rows prepares it before any result arrives
            raise RuntimeError("RayExecutor._row_result called before map_rows prepared the run")
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
        result.update(trained_on=where, measured_on={**node_info(), "driver": True}, train_device=where.get("device"))
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
