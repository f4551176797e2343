"""A small sweep on a local Ray instance (2 CPUs, loopback only, no dashboard) equals in-process."""

import importlib.util
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modelshrink.cli import main
from modelshrink.config import parse_config
from modelshrink.runner.executors import RayExecutor
from modelshrink.runner.run import Runner

pytest.importorskip("ray")
INT8 = {"name": "int8", "steps": [{"kind": "quant.int8_dynamic"}]}


def _gone_once_sent(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """The driver's copy of the user's model is moved away as soon as the run is in Ray's object store,
    before any task starts: a task that read the driver's path would fail. (The driver hashes its files
    for the rows' keys first, as it does before any row is sent.)"""
    prepare = RayExecutor._prepare

    def prepare_then_move(self: RayExecutor, rows: Any, data: Any) -> Any:
        run = prepare(self, rows, data)
        if folder.exists():
            rows.folder.shared(data)  # the driver's own fingerprint of its files, kept by its RunFolder
            folder.rename(folder.with_name(folder.name + "-gone"))
        return run

    monkeypatch.setattr(RayExecutor, "_prepare", prepare_then_move)


def test_ray_sweep_equals_in_process(sweep: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows on Ray equal the in-process rows: a built-in model, then the user's own model (a file.py with its
    --weights, and an hf folder) whose driver-side files are gone once the rows are sent."""
    # The in-process rows skip timing and memory (this process only: Ray's workers measure in full); the
    # compared figures (accuracies, sizes, formats) do not depend on them.
    raw = sweep.config(tmp_path, variants=sweep.VARIANTS[:3], seeds=(0,))  # lean: 3 rows
    raw["train"]["threads"] = 1  # a row holds its threads' CPUs: 1 thread lets the 2 CPUs run 2 rows at once
    cfg = parse_config(raw)
    quiet = lambda _m: None  # noqa: E731
    inproc = Runner(cfg, tmp_path / "a", log=quiet).run()
    # Measured as given (the user's weights, the folder's own head): no baseline training, 2 rows each.
    kinds = ["custom", "hf"] if importlib.util.find_spec("transformers") else ["custom"]
    mine = {k: parse_config({**raw, "variants": [sweep.VARIANTS[0], INT8],
                             "model": sweep.user_model(tmp_path / k / "mine", k)}) for k in kinds}  # fmt: skip
    expected = {k: Runner(c, tmp_path / k / "a", log=quiet).run() for k, c in mine.items()}
    with RayExecutor("local", jobs=2) as ex:  # ray.init(num_cpus=2, include_dashboard=False) on 127.0.0.1
        import ray

        assert ray.cluster_resources()["CPU"] == 2
        on_ray = Runner(cfg, tmp_path / "b", log=quiet).run(executor=ex)
        assert len(on_ray) == 3 and {r["executor"] for r in on_ray} == {"ray"}
        assert sweep.table(on_ray) == sweep.table(inproc)
        for kind, c in mine.items():  # the same executor, prepared anew for each experiment
            with monkeypatch.context() as m:
                _gone_once_sent(m, tmp_path / kind / "mine")
                rows = Runner(c, tmp_path / kind / "b", log=quiet).run(executor=ex)
            assert not (tmp_path / kind / "mine").exists()
            assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
            assert sweep.table(rows) == sweep.table(expected[kind]), kind
            assert {r["baseline_source"] for r in rows} == {"measured"}


def _closed_loopback_port() -> int:
    """A loopback port nothing listens on: bound by the OS, read, then released (tests talk to loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_ray_address_fails_fast(
    sweep: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n")
    csv = Path(sweep.config(tmp_path)["data"]["path"])
    address = f"127.0.0.1:{_closed_loopback_port()}"
    t0 = time.monotonic()
    code = main(["run", "--task", "csv", "--data", str(csv), "--config", str(cfg), "--out", str(tmp_path / "o"),
                 "--executor", "ray", "--ray-address", address])  # fmt: skip
    assert code == 2 and time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    # Refused by the TCP probe before ray.init, which on its own would retry for minutes.
    assert f"cannot reach a Ray cluster at '{address}'" in err and "ray start --head" in err
    assert not (tmp_path / "o" / "results.sqlite").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ray_gpu_rows_train_on_a_gpu_share_and_are_measured_on_the_driver(
    sweep: SimpleNamespace, tmp_path: Path
) -> None:
    cfg_dict = sweep.config(tmp_path, variants=sweep.VARIANTS[:2], seeds=(0,))
    cfg = parse_config({**cfg_dict, "train": {**cfg_dict["train"], "device": "cuda"}})
    with RayExecutor("local", jobs=2) as ex:
        import ray

        assert ray.cluster_resources().get("GPU", 0) >= 1
        rows = Runner(cfg, tmp_path / "g", log=lambda _m: None).run(executor=ex)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    for r in rows:
        assert r["train_device"].startswith("cuda") and r["trained_on"]["gpu"]  # the GPU's name
        assert r["measured_on"]["driver"] is True  # measured by the driver, not in a task
        for size in r["sizes"]:
            assert (tmp_path / "g" / size["file"]).stat().st_size == size["file_bytes"]


def test_a_row_asks_for_its_training_threads_unless_no_node_has_them() -> None:
    from modelshrink.errors import ConfigError
    from modelshrink.runner.ray_executor import row_threads

    def fake(*cpus: float) -> SimpleNamespace:
        return SimpleNamespace(nodes=lambda: [{"Alive": True, "Resources": {"CPU": c}} for c in cpus])

    assert row_threads(fake(0, 4, 2), 2) == 2  # the row computes with the config's threads, as in-process
    with pytest.warns(UserWarning, match="train.threads 2 is more than the largest Ray node's 1 CPUs"):
        assert row_threads(fake(0, 1, 1), 2) == 1  # never an infeasible task that waits forever
    with pytest.raises(ConfigError, match="no node with a CPU"):
        row_threads(fake(0), 1)
