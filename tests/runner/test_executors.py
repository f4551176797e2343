"""Local processes give the same numbers as in-process, although each row recomputes its prefix."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.config import parse_config
from modelshrink.errors import ConfigError
from modelshrink.runner.executors import Executor, ProcessExecutor, make_executor, threads_per_worker
from modelshrink.runner.run import Runner


def test_processes_equal_in_process(sweep: SimpleNamespace, tmp_path: Path) -> None:
    cfg = parse_config(sweep.config(tmp_path, variants=sweep.VARIANTS[:3], seeds=(0,)))  # lean: 3 rows
    quiet = lambda _m: None  # noqa: E731
    inproc = Runner(cfg, tmp_path / "a", log=quiet).run()
    with ProcessExecutor(2) as ex:
        procs = Runner(cfg, tmp_path / "b", log=quiet).run(executor=ex)
    assert len(procs) == 3 and all(r["status"] == "ok" for r in procs)
    assert {r["executor"] for r in procs} == {"processes"}
    assert sweep.table(procs) == sweep.table(inproc)


def test_executor_flags() -> None:
    with pytest.raises(ConfigError, match="--jobs must be at least 1, got 0"):
        make_executor("inprocess", 0, None)
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("inprocess", None, "local")
    with pytest.raises(ConfigError, match="unknown --executor 'dask'"):
        make_executor("dask", None, None)
    assert type(make_executor("inprocess", None, None)) is Executor
    assert isinstance(make_executor("inprocess", 2, None), ProcessExecutor)
    assert threads_per_worker(10**6) == 1
