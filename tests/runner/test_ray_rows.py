"""The parts of a self-contained Ray row that need no cluster: files in and out, the artifact URI,
the flags, and the --device cuda split (model built in a task, measured by the driver)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.cli import main
from modelshrink.config import parse_config
from modelshrink.errors import ConfigError
from modelshrink.runner.executors import make_executor
from modelshrink.runner.ray_rows import RaySetup, check_artifact_uri, fetch_files, stage_files, write_files
from modelshrink.runner.run import Runner
from modelshrink.runner.task import RowRunner


def test_files_round_trip_through_a_file_uri(tmp_path: Path) -> None:
    setup = RaySetup("{}", 1, "run1", artifacts=f"file://{tmp_path / 'stage'}")
    files = {"models/a-seed0/model.onnx": b"\x00onnx", "models/a-seed0/metrics.json": b"{}"}
    sent = stage_files(setup, files)
    assert sent == sorted(files)  # names only: the bytes went to the URI
    assert (tmp_path / "stage" / "run1" / "models" / "a-seed0" / "model.onnx").read_bytes() == b"\x00onnx"
    assert fetch_files(setup, sent) == files
    assert not [p for p in (tmp_path / "stage").rglob("*") if p.is_file()]  # fetched, then removed
    write_files(tmp_path / "run", files)
    assert (tmp_path / "run" / "models" / "a-seed0" / "model.onnx").read_bytes() == b"\x00onnx"
    assert stage_files(RaySetup("{}", 1, "run1"), files) == files  # no URI: the bytes ride in the result


def test_write_files_stays_inside_the_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the run folder"):
        write_files(tmp_path / "run", {"../escape.txt": b"x"})
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize(
    ("uri", "match"),
    [("/no/scheme", "must be a URI"), ("file://relative/x", "absolute path"), ("nosuchfs://b/p", "fsspec cannot")],
)
def test_bad_artifact_uri_is_one_line(uri: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_artifact_uri(uri)


def test_ray_flags_need_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--row-retries needs --executor ray"):
        make_executor("inprocess", None, None, row_retries=2)
    with pytest.raises(ConfigError, match="--artifacts needs --executor ray"):
        make_executor("processes", 2, None, artifacts=f"file://{tmp_path}")
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="--row-retries must be 0 or more"):
        make_executor("ray", 1, "local", row_retries=-1)  # refused before Ray starts


def test_cli_refuses_row_retries_without_ray(sweep: SimpleNamespace, tmp_path: Path) -> None:
    csv = sweep.config(tmp_path)["data"]["path"]
    code = main(["run", "--task", "csv", "--data", csv, "--epochs", "1", "--out", str(tmp_path / "o"),
                 "--row-retries", "2"])  # fmt: skip
    assert code == 2 and not (tmp_path / "o" / "results.sqlite").exists()


def test_stage_then_measure_equals_the_whole_row(
    sweep: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What --device cuda on Ray does (the model from a task, measured by the driver), on the CPU."""
    cfg = parse_config(sweep.config(tmp_path, variants=sweep.VARIANTS[1:2], seeds=(0,)))
    data = Runner(cfg, tmp_path / "a").prepare()
    quiet = lambda _m: None  # noqa: E731
    whole = RowRunner(cfg, tmp_path / "a", log=quiet)
    variant = cfg.variants[0]
    _, expected = whole.run(data, variant, 0, {("baseline",): whole.baseline(data, 0)})
    split = RowRunner(cfg, tmp_path / "a", log=quiet)  # the baseline from the folder's cache, as on the driver
    status, stage = split.stage(data, variant, 0, {("baseline",): split.baseline(data, 0)})
    assert status == "ok"
    status, got = split.run(data, variant, 0, {("baseline",): split.baseline(data, 0)}, stage=stage)
    assert status == "ok"
    for key in ("test_accuracy", "val_accuracy", "file_bytes", "compact_bytes", "nonzeros", "train_device"):
        assert got[key] == expected[key], key


@pytest.mark.parametrize("kind", ["custom", "hf"])
def test_model_files_travel_and_keep_the_rows_identity(
    kind: str, sweep: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task rebuilds the user's model from the bytes the driver sent, the driver's files gone, in a process
    that never imported the user's file; the row keys and the model's fingerprint are the driver's."""
    from modelshrink.models import byo
    from modelshrink.models.builders import build_model, model_fingerprint
    from modelshrink.runner import ray_rows

    if kind == "hf":
        pytest.importorskip("transformers")
    base = sweep.config(tmp_path, variants=sweep.VARIANTS[:2], seeds=(0,))
    cfg = parse_config({**base, "model": sweep.user_model(tmp_path / "mine", kind)})
    data = Runner(cfg, tmp_path / "run").prepare()  # the driver: reads, checks (imports the file.py) the model
    driver = RowRunner(cfg, tmp_path / "run", log=lambda _m: None)
    want = [driver.folder.row_key(data, v, 0) for v in cfg.variants], driver.folder.baseline_dir(data, 0).name
    files = ray_rows.pack_model(cfg.model)
    assert files is not None and (files.folder if kind == "hf" else files.build and files.weights)
    (tmp_path / "mine").rename(tmp_path / "gone")  # no path of the driver's is readable now
    monkeypatch.setattr(byo, "_IN_PROCESS", {})  # a fresh worker: it never imported the user's file
    monkeypatch.setattr(ray_rows, "_BUILD_FNS", {})
    with ray_rows.task_rows(RaySetup(cfg.model_dump_json(), 1, "t"), files) as rows:
        got = [rows.folder.row_key(data, v, 0) for v in cfg.variants], rows.folder.baseline_dir(data, 0).name
        assert got == want
        assert rows.cfg.model.build == cfg.model.build  # the reference (part of the identity) is kept
        if kind == "hf":
            assert model_fingerprint(rows.cfg.model) == driver.folder.shared(data)["model_sha256"]
        assert build_model(rows.cfg.model, data.input_dim, data.num_labels) is not None
        assert rows.baseline(data, 0).source == "measured"  # the user's weights / the folder's head, as given
        task_folder = rows.folder.out
    assert not task_folder.exists()


def test_model_files_over_the_limit_or_from_python_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelshrink.models.builders import ModelConfig
    from modelshrink.models.byo import register_build_fn
    from modelshrink.runner import ray_rows

    (tmp_path / "w.safetensors").write_bytes(b"x" * 100)
    monkeypatch.setattr(ray_rows, "MODEL_BYTES_MAX", 99)
    with pytest.raises(ConfigError, match="GiB limit"):
        ray_rows.pack_model(ModelConfig(weights=str(tmp_path / "w.safetensors")))
    assert ray_rows.pack_model(ModelConfig()) is None  # a built-in model sends nothing
    ref = register_build_fn(lambda inputs: None)
    with pytest.raises(ConfigError, match="cannot travel to Ray's nodes"):
        ray_rows.pack_model(ModelConfig(name="custom", build=ref))


def test_search_takes_the_ray_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`search --executor ray` hands --row-retries and --artifacts to the executor as run and sweep do; without
    Ray they are refused (exit 2) before any data is read."""
    from modelshrink.runner import executors

    base = ["search", "--max-drop", "1", "--task", "digits", "--out", str(tmp_path / "s")]
    assert main([*base, "--row-retries", "2"]) == 2
    assert "--row-retries needs --executor ray" in capsys.readouterr().err
    seen: list[tuple] = []

    def make(*args: object) -> None:
        seen.append(args)
        raise ConfigError("stopped before Ray starts")

    monkeypatch.setattr(executors, "make_executor", make)
    uri = f"file://{tmp_path / 'stage'}"
    assert main([*base, "--executor", "ray", "--ray-address", "local", "--row-retries", "5", "--artifacts", uri]) == 2
    assert seen == [("ray", None, "local", None, 5, uri)]
    assert not (tmp_path / "s").exists()
