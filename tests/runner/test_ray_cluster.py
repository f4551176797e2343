"""A real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head with no CPUs for
tasks, 2 worker nodes of 1 CPU each, every node its own temporary folder), loopback only.

Rows run self-contained: the driver's data file is deleted before the sweep, so a worker that read
a driver path would fail; files come back to the driver's run folder only; killing a worker node
mid-row loses nothing. A tiny synthetic sweep (the seed preset is in benchmarks/sweep_overhead.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from modelshrink.config import parse_config
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.runner.executors import RayExecutor
from modelshrink.runner.run import Runner

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

PRUNE = {"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5, "epochs": 1}
VARIANTS = [
    {"name": "baseline", "steps": []},
    {"name": "pruned", "steps": [PRUNE]},
    {"name": "pruned-int8", "steps": [PRUNE, {"kind": "quant.int8_dynamic"}]},
]
COMPARED = ("status", "train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1", "file_bytes",
            "compact_bytes", "nonzeros", "export_format")  # fmt: skip
LIMIT_S = 600  # the whole module, cluster start included (about 2 minutes on a quiet 2-core machine)
quiet = lambda _m: None  # noqa: E731


def _table(rows: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[Any, ...]]:
    out = {(r["variant"], r["seed"]): tuple(r.get(c) for c in COMPARED) for r in rows}
    assert len(out) == len(rows), "a (variant, seed) row appears twice"
    return out


def _timeout(_sig: int, _frame: FrameType | None) -> None:
    raise TimeoutError(f"the Ray cluster tests ran past {LIMIT_S} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Path]]]:
    # Ray turns a loopback head address into this machine's outward IP before connecting (its
    # resolve_ip_for_localhost); the nodes listen on loopback only, so the driver must stay there too.
    mp = pytest.MonkeyPatch()
    mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(LIMIT_S)
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1",
        # a dead node is noticed within a few seconds (defaults: about 30 s)
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})  # fmt: skip
    dirs = {}
    for i in range(2):  # each node's tasks make their temporary folders in its own folder
        d = tmp_path_factory.mktemp(f"node{i}")
        dirs[c.add_node(num_cpus=1, node_ip_address="127.0.0.1", env_vars={"TMPDIR": str(d)}).node_id] = d
    try:
        yield c, dirs
    finally:
        c.shutdown()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        mp.undo()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, dict]:
    """The config, the driver's data (its CSV then deleted) and the in-process rows to compare with."""
    tmp = tmp_path_factory.mktemp("sweep")
    csv = write_synthetic_csv(tmp / "d.csv", 150)
    cfg = parse_config({"data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
                        "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1, "threads": 1},
                        "seeds": [0], "variants": VARIANTS})  # fmt: skip  # 1 thread: the nodes have 1 CPU each
    runner = Runner(cfg, tmp / "inproc", log=quiet)
    data = runner.prepare()
    expected = _table(runner.run(data))
    csv.unlink()  # from here on, nothing may read it: the data travels in Ray's object store
    return cfg, data, expected


def _files_ok(out: Path, rows: list[dict[str, Any]]) -> None:
    """Every artifact a row names is in the driver's run folder, with the bytes the row measured."""
    for r in rows:
        for size in r["sizes"]:
            assert (out / size["file"]).stat().st_size == size["file_bytes"]


def _no_task_folders(dirs: list[Path]) -> None:
    """Each task's temporary folder is gone (torch's own caches may stay in the node's TMPDIR)."""
    assert all(d.is_dir() for d in dirs)
    assert not [p for d in dirs for p in d.glob("modelshrink-task-*")], "a task left its folder on its node"


@pytest.mark.long  # minutes: starts a 3-node cluster; tests/runner/test_ray_rows.py covers the route in `make test`
def test_two_nodes_one_killed_mid_row_give_the_in_process_rows(cluster: tuple, sweep: tuple, tmp_path: Path) -> None:
    """One sweep for every check (a cluster's rows are slow on 2 cores): files through a file:// artifact
    URI, a worker node killed while both nodes run a row, and still the in-process rows, each once.
    (The object-store route for files is tested on a local instance: tests/runner/test_ray.py.)"""
    c, dirs = cluster
    cfg, data, expected = sweep
    stage, out = tmp_path / "stage", tmp_path / "run"
    killed: list[str] = []
    with RayExecutor(c.address, row_retries=2, artifacts=f"file://{stage}") as ex:
        assert ray.cluster_resources()["CPU"] == 2 and ex.jobs == 2
        finished = ex._finished

        def kill_after_first(refs: dict) -> Iterator[tuple[Any, Any]]:
            for i, item in enumerate(finished(refs)):
                yield item
                if i == 0 and len(refs) == len(VARIANTS):  # rows, not baselines: one row is in the store
                    _wait_busy()  # both nodes run a row now
                    node = next(iter(c.worker_nodes))
                    killed.append(node.node_id)
                    c.remove_node(node, allow_graceful=False)

        ex._finished = kill_after_first  # type: ignore[method-assign]
        rows = Runner(cfg, out, log=quiet).run(data, ex)
        assert list(stage.glob("*/models")), "the files went through the artifact URI"
    assert killed
    assert _table(rows) == expected  # every row ok, once; accuracies, sizes and formats equal to in-process
    assert {r["executor"] for r in rows} == {"ray"}
    assert {r["measured_on"]["ray_node_id"] for r in rows} <= set(dirs)  # measured on the worker nodes
    assert rows[-1]["measured_on"]["ray_node_id"] not in killed
    _files_ok(out, rows)
    assert list((out / "baselines").glob("seed0-*/model.safetensors"))  # the baseline cache, as in-process
    assert not list(stage.rglob("*"))  # staged files were fetched, then the run's prefix removed
    _no_task_folders([d for node, d in dirs.items() if node not in killed])  # the killed node's row died mid-way


def _wait_busy(limit_s: float = 30.0) -> None:
    import time

    t0 = time.monotonic()
    while ray.available_resources().get("CPU", 0) > 0:
        assert time.monotonic() - t0 < limit_s, "no row started on the second node"
        time.sleep(0.05)
