"""`run --mlflow`: the store's rows mirrored into MLflow, read back through MlflowClient.

One tiny run (two variants, one seed) is shared by the module: mlflow's import and its SQLite schema set-up
take seconds each.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402

from modelshrink.cli import main  # noqa: E402
from modelshrink.data.synthetic import write_synthetic_csv  # noqa: E402
from modelshrink.store import ResultStore  # noqa: E402
from modelshrink.tracking import COMPLETE_TAG, EXPERIMENT, ROW_KEY_TAG, MlflowTracker, tracking_uri  # noqa: E402

TINY = (
    "model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\nseeds: [0]\n"
    "variants: [{name: baseline, steps: []}, {name: int8, steps: [{kind: quant.int8_dynamic}]}]\n"
)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("mlflow")
    (tmp / "c.yaml").write_text(TINY)
    csv = write_synthetic_csv(tmp / "d.csv", 120)
    args = ["run", "--task", "csv", "--data", str(csv), "--config", str(tmp / "c.yaml"), "--out", str(tmp / "o")]
    assert main([*args, "--mlflow"]) == 0  # no URI: the local SQLite store in the run folder
    client = MlflowClient(tracking_uri=tracking_uri("local", tmp / "o"))
    with ResultStore(tmp / "o" / "results.sqlite", readonly=True) as store:
        rows = store.rows()
    return SimpleNamespace(tmp=tmp, out=tmp / "o", args=args, client=client, rows=rows)


def _runs(client: MlflowClient) -> tuple[list, list]:
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_one_parent_and_one_child_per_row(tracked: SimpleNamespace) -> None:
    parents, children = _runs(tracked.client)
    assert len(parents) == 1 and len(tracked.rows) == 2
    assert {c.data.tags[ROW_KEY_TAG] for c in children} == {r["key"] for r in tracked.rows}
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(c.info.status == "FINISHED" and c.data.tags[COMPLETE_TAG] == "1" for c in children)
    parent_files = {f.path for f in tracked.client.list_artifacts(parents[0].info.run_id)}
    assert {"summary.md", "report.html"} <= parent_files
    assert (tracked.out / "mlartifacts").is_dir()  # a local store keeps its artifacts in the run folder


def test_child_holds_config_metrics_tags_and_files(tracked: SimpleNamespace) -> None:
    _, children = _runs(tracked.client)
    by_key = {c.data.tags[ROW_KEY_TAG]: c for c in children}
    for row in tracked.rows:
        child = by_key[row["key"]]
        assert child.data.metrics["test_accuracy"] == pytest.approx(row["test_accuracy"])
        assert child.data.metrics["file_bytes"] == row["file_bytes"]
        assert child.data.params["seed"] == str(row["config"]["seed"])
        assert child.data.params["variant.name"] == row["variant"]
        assert child.data.tags["modelshrink.format"] == row["export_format"]
        files = {f.path for f in tracked.client.list_artifacts(child.info.run_id)}
        assert "metrics.json" in files and any(f.endswith(".onnx") for f in files)
    int8 = next(c for c in children if c.data.tags["modelshrink.variant"] == "int8")
    assert int8.data.tags["modelshrink.techniques"] == "quant.int8_dynamic"


def test_resume_logs_nothing_twice(tracked: SimpleNamespace) -> None:
    assert main([*tracked.args, "--resume", "--mlflow"]) == 0
    parents, children = _runs(tracked.client)
    assert len(parents) == 1 and len(children) == 2


def test_half_logged_child_is_logged_again(tracked: SimpleNamespace) -> None:
    # A crash between creating a child and its last tag: the next sync deletes it and logs the row in full.
    uri = tracking_uri("local", tracked.out)
    tracker = MlflowTracker(uri, tracked.out)
    row = tracked.rows[0]
    done = next(c for c in _runs(tracked.client)[1] if c.data.tags[ROW_KEY_TAG] == row["key"])
    tracked.client.delete_tag(done.info.run_id, COMPLETE_TAG)
    tracker = MlflowTracker(uri, tracked.out)
    assert row["key"] not in tracker.logged
    assert tracker.sync(tracked.rows) == 1
    _, children = _runs(tracked.client)
    assert len(children) == 2 and all(c.data.tags.get(COMPLETE_TAG) == "1" for c in children)


def test_file_store(tracked: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's own local file store (deprecated in MLflow 3; it refuses to open without this variable).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tracked.tmp / "mlruns").as_uri()
    assert MlflowTracker(uri, tracked.out).sync(tracked.rows) == 2
    assert MlflowTracker(uri, tracked.out).sync(tracked.rows) == 0  # found again by the row-key tag
    parents, children = _runs(MlflowClient(tracking_uri=uri))
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.metrics["file_bytes"] > 0 for c in children)


def test_missing_mlflow_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from modelshrink.errors import ConfigError

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r"pip install 'modelshrink\[mlflow\]'"):
        MlflowTracker("local", tmp_path)
