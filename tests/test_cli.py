"""The CLI in-process: errors are one line with exit code 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelshrink.cli import main
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.store import ResultStore


def _csv(tmp_path: Path, n: int = 120) -> Path:
    return write_synthetic_csv(tmp_path / "tiny.csv", n)


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "train", "list", "report"):
        assert command in out


def test_every_run_flag_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--out", "--epochs", "--seed", "--config", "--preset", "--text-column", "--label-column"):
        assert flag in out


def test_list_shows_techniques_presets_tasks_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("prune.magnitude", "cluster.kmeans", "quant.int8_dynamic", "seed", "emotion", "lstm"):
        assert name in out


def test_train_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\n")
    code = main(["train", "--task", "csv", "--data", str(_csv(tmp_path)), "--out", str(out), "--epochs", "2",
                 "--config", str(cfg), "--seed", "0"])  # fmt: skip
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline"] and rows[0]["status"] == "ok"
    history = json.loads(next((out / "baselines").glob("*/history.json")).read_text())
    assert 1 <= len(history) <= 2 and {"epoch", "train_loss", "val_loss", "val_accuracy"} <= set(history[0])
    metrics = json.loads((out / "models" / "baseline-seed0" / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test"} and len(metrics["test"]["confusion_matrix"]) == 3
    assert (out / "preprocessing.json").is_file() and (out / "summary.md").is_file()
    # Two epochs of a tiny model stay near chance, so check that every place reports the same accuracy:
    # the store, its results.json export, metrics.json, its confusion matrix and the printed log line.
    with ResultStore(out / "results.sqlite", readonly=True) as store:
        (stored,) = store.rows()
    acc = stored["test_accuracy"]
    cm = metrics["test"]["confusion_matrix"]
    assert rows[0]["test_accuracy"] == acc and metrics["test"]["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert sum(cm[i][i] for i in range(3)) / sum(map(sum, cm)) == pytest.approx(acc, abs=1e-12)
    assert f"baseline seed 0: test acc {acc:.4f}" in capsys.readouterr().err


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], out: Path) -> str:
    code = main(argv + ["--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists(), "nothing may be written on bad input"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line
    return lines[0]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error(capsys, ["train", "--data", str(tmp_path / "nope.csv")], tmp_path / "o")
    assert "does not exist" in line


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "e.csv").write_text("")
    assert "is empty" in _error(capsys, ["train", "--data", str(tmp_path / "e.csv")], tmp_path / "o")


def test_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.csv").write_bytes(bytes(range(256)) * 8)
    assert "binary" in _error(capsys, ["train", "--data", str(tmp_path / "b.csv")], tmp_path / "o")


def test_missing_columns_lists_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.csv").write_text("sentence,feeling\nhi,joy\n")
    line = _error(capsys, ["train", "--data", str(tmp_path / "c.csv")], tmp_path / "o")
    assert "'sentence', 'feeling'" in line and "--text-column" in line


def test_one_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.csv").write_text("text,label\n" + "".join(f"text {i},joy\n" for i in range(50)))
    assert "at least 2" in _error(capsys, ["train", "--data", str(tmp_path / "c.csv")], tmp_path / "o")


def test_too_few_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.csv").write_text("text,label\na,joy\nb,sad\nc,joy\n")
    assert "too few" in _error(capsys, ["train", "--data", str(tmp_path / "c.csv")], tmp_path / "o")


def test_unknown_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochz: 3\n")
    line = _error(capsys, ["train", "--data", str(_csv(tmp_path)), "--config", str(cfg)], tmp_path / "o")
    assert "train.epochz" in line and "unknown key" in line


def test_unknown_technique_lists_known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("variants:\n  - {name: x, steps: [{kind: prune.magic}]}\n")
    line = _error(capsys, ["run", "--data", str(_csv(tmp_path)), "--config", str(cfg)], tmp_path / "o")
    assert "prune.magic" in line and "prune.magnitude" in line


def test_no_emotion_data_names_the_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("MODELSHRINK_DATA", raising=False)
    # Make the Hub unreachable even where `datasets` and a network exist.
    monkeypatch.setattr(
        "modelshrink.data.tasks._download_emotion", lambda dest: (_ for _ in ()).throw(OSError("offline"))
    )
    line = _error(capsys, ["train"], tmp_path / "o")
    assert "--data" in line and "MODELSHRINK_DATA" in line and "pip install" in line


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("{kind: prune.magnitude, final_sparsity: 1.0}", ["final_sparsity", "less than 1", "1.0"]),
        ("{kind: prune.magnitude, final_sparsity: -0.1}", ["final_sparsity", "greater than or equal to 0", "-0.1"]),
        ("{kind: prune.magnitude, begin_step: 500, end_step: 500}", ["end_step (500)", "begin_step (500)"]),
        ("{kind: cluster.kmeans, clusters: 1}", ["clusters", "greater than or equal to 2", "1"]),
    ],
)
def test_bad_technique_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], step: str, expected: list[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"variants:\n  - {{name: x, steps: [{step}]}}\n")
    line = _error(capsys, ["run", "--data", str(_csv(tmp_path)), "--config", str(cfg)], tmp_path / "o")
    assert "variants.0.steps" in line
    for text in expected:
        assert text in line


def test_predict_classifies_raw_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embed_dim: 16, hidden: 16}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {lr: 0.02}\n")
    argv = ["train", "--task", "csv", "--data", str(_csv(tmp_path, 300)), "--out", str(out), "--epochs", "15"]
    assert main(argv + ["--config", str(cfg), "--seed", "0"]) == 0
    capsys.readouterr()
    model_dir = out / "models" / "baseline-seed0"
    assert main(["predict", str(model_dir), "i feel so furious today", "really scared and nervous"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["anger", "fear"]
    assert main(["predict", str(tmp_path), "x"]) == 2


def test_image_task_with_text_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A model the user named is never swapped (a preset's text model is: see tests/models/test_byo.py).
    line = _error(capsys, ["train", "--task", "digits", "--model", "lstm"], tmp_path / "o")
    assert "gives images but model 'lstm' reads text" in line and "--model NAME" in line


def test_a_failed_variant_is_saved_and_exits_1(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n"
                   "variants: [{name: baseline, steps: []},\n"
                   "           {name: bad, steps: [{kind: cluster.kmeans, clusters: 100000, epochs: 0}]}]\n")  # fmt: skip
    out = tmp_path / "o"
    argv = [
        "run",
        "--task",
        "csv",
        "--data",
        str(_csv(tmp_path)),
        "--config",
        str(cfg),
        "--seed",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == 1
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows["baseline"]["status"] == "ok" and rows["bad"]["status"] == "failed"
    assert "clusters=100000" in (out / "summary.md").read_text()


def _tiny_cfg(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n"
                   "variants: [{name: baseline, steps: []}]\n" + extra)  # fmt: skip
    return cfg


def test_a_folder_refuses_a_different_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, out = _csv(tmp_path), tmp_path / "o"
    argv = ["run", "--task", "csv", "--data", str(csv), "--config", str(_tiny_cfg(tmp_path)), "--seed", "0"]
    assert main(argv + ["--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "results.json").read_text()
    assert main(argv + ["--out", str(out), "--epochs", "2"]) == 2  # training changed
    assert "different train" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text(csv.read_text() + "\none more sentence,joy\n")
    assert main(["run", "--task", "csv", "--data", str(other), "--config", str(_tiny_cfg(tmp_path)), "--seed", "0",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "different data_sha256" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before  # nothing was touched
    # More seeds into the same folder are fine: the first seed's row is reused.
    assert main(argv + ["--out", str(out), "--seed", "1"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert sorted(r["seed"] for r in rows) == [0, 1]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("train: 5\n", "train: must be a mapping of settings, got 5"),
        ("train:\n", "got None"),
        ("seeds: [-1]\n", "greater than or equal to 0"),
        ("variants: [\n  - x: [\n", "not valid YAML at line"),
    ],
)
def test_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, expected: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    assert expected in _error(capsys, ["run", "--data", str(_csv(tmp_path)), "--config", str(cfg)], tmp_path / "o")


def test_negative_seed_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "seeds" in _error(capsys, ["run", "--data", str(_csv(tmp_path)), "--seed", "-1"], tmp_path / "o")


def test_broken_artifacts_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.sqlite").write_text("not a database, just text " * 100)
    assert main(["report", str(tmp_path)]) == 2
    assert "not a modelshrink results store" in capsys.readouterr().err
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "preprocessing.json").write_text("{not json")
    assert main(["predict", str(tmp_path), "hello"]) == 2
    assert "not a valid preprocessing file" in capsys.readouterr().err
