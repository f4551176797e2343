"""Workers that die or hang (`--jobs`): that row fails with the cause, the others finish, a rerun redoes only it.

The faulty techniques live in a helper module written to a temporary folder on sys.path; the
spawned workers import it when they unpickle the run's data (a TaskData subclass from that module),
so nothing in the package knows about them.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelshrink.config import parse_config
from modelshrink.runner.executors import ProcessExecutor
from modelshrink.runner.run import Runner
from modelshrink.techniques import TECHNIQUES

HELPER = '''
"""Test-only techniques: kill their own worker, or sleep, while the file $FAULT_ON names exists."""
import os, signal, time
from dataclasses import dataclass
from typing import Literal
from modelshrink.data.tasks import TaskData
from modelshrink.techniques import TECHNIQUES, TechniqueConfig, TechniqueResult, register_technique

class KillConfig(TechniqueConfig):
    kind: Literal["test.kill"] = "test.kill"

class SleepConfig(TechniqueConfig):
    kind: Literal["test.sleep"] = "test.sleep"

class OomConfig(TechniqueConfig):
    kind: Literal["test.oom"] = "test.oom"

if "test.kill" not in TECHNIQUES:
    @register_technique(KillConfig)
    def kill(model, cfg, ctx):
        if os.path.exists(os.environ.get("FAULT_ON", "/nonexistent")):
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
        return TechniqueResult(model)

    @register_technique(SleepConfig)
    def sleep(model, cfg, ctx):
        if os.path.exists(os.environ.get("FAULT_ON", "/nonexistent")):
            time.sleep(600)
        return TechniqueResult(model)

    @register_technique(OomConfig)
    def oom(model, cfg, ctx):
        if os.path.exists(os.environ.get("FAULT_ON", "/nonexistent")):
            import resource
            import numpy as np
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), hard))  # this worker's memory is full
            try:
                np.ones(8 << 30, dtype=np.uint8)  # 8 GiB: a real MemoryError from the allocator
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        return TechniqueResult(model)

@dataclass
class FaultData(TaskData):
    pass
'''


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    (tmp_path / "fault_helper.py").write_text(textwrap.dedent(HELPER))
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    import fault_helper  # noqa: PLC0415

    yield SimpleNamespace(data=lambda d: fault_helper.FaultData(**{f.name: getattr(d, f.name)
                                                                   for f in dataclasses.fields(d)}))  # fmt: skip
    for kind in ("test.kill", "test.sleep", "test.oom"):
        TECHNIQUES.pop(kind, None)  # other tests see the registry as it was
    sys.modules.pop("fault_helper", None)


def _run(cfg: dict, out: Path, data_of: Any, ex: ProcessExecutor, log: Any = None) -> dict[str, dict]:
    runner = Runner(parse_config(cfg), out, log=log or (lambda _m: None))
    return {r["variant"]: r for r in runner.run(data_of(runner.prepare()), ex)}


def test_worker_killed_mid_row_then_resume(
    sweep: SimpleNamespace, faults: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variants = [{"name": "killed", "steps": [{"kind": "test.kill"}]}, {"name": "baseline", "steps": []},
                {"name": "oom", "steps": [{"kind": "test.oom"}]}]  # fmt: skip
    cfg = sweep.config(tmp_path, variants=variants, seeds=(0,))
    (tmp_path / "fault").touch()
    monkeypatch.setenv("FAULT_ON", str(tmp_path / "fault"))
    with ProcessExecutor(2) as ex:  # the pool outlives its dead worker: a second batch runs on it
        rows = _run(cfg, tmp_path / "out", faults.data, ex)
        assert {v: r["status"] for v, r in rows.items()} == {"baseline": "ok", "killed": "failed", "oom": "failed"}
        assert "worker lost" in rows["killed"]["error"] and "SIGKILL" in rows["killed"]["error"]
        assert rows["oom"]["error"].startswith("out of memory (MemoryError"), rows["oom"]["error"]
        (tmp_path / "fault").unlink()  # the same workers (and the killed one's replacement) now run it
        logged: list[str] = []
        again = _run(cfg, tmp_path / "out", faults.data, ex, logged.append)
    assert {v: r["status"] for v, r in again.items()} == {"baseline": "ok", "killed": "ok", "oom": "ok"}, again
    assert again["baseline"]["wall_s"] == rows["baseline"]["wall_s"]  # the finished row was not redone
    assert sorted(m.split(":")[0] for m in logged if "test acc" in m) == ["killed seed 0", "oom seed 0"]


def test_row_timeout_stops_a_hung_row(sweep: SimpleNamespace, faults: SimpleNamespace, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    cfg = sweep.config(tmp_path, variants=[{"name": "hung", "steps": [{"kind": "test.sleep"}]}], seeds=(0,))
    (tmp_path / "fault").touch()
    monkeypatch.setenv("FAULT_ON", str(tmp_path / "fault"))
    with ProcessExecutor(1, row_timeout_s=2) as ex:  # the baseline trains before, outside the row's clock
        rows = _run(cfg, tmp_path / "out", faults.data, ex)
    assert rows["hung"]["status"] == "failed"
    assert "timed out after --row-timeout 2 s" in rows["hung"]["error"]
