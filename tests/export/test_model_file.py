"""save_model / load_model and `modelshrink eval`: a model file that rebuilds and evaluates itself."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from modelshrink.cli import main
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.data.tasks import DataConfig, TaskData, load_task
from modelshrink.errors import ArtifactError
from modelshrink.export.compact import MAGIC, int8_weight_only, load_model, save_model
from modelshrink.measure.accuracy import classification_metrics, predict_logits
from modelshrink.models.builders import ModelConfig, build_model

CFG = ModelConfig(embed_dim=8, hidden=8)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TaskData]:
    csv = write_synthetic_csv(tmp_path_factory.mktemp("data") / "d.csv", 200)
    return csv, load_task(DataConfig(task="csv", path=str(csv), vocab_size=64, max_len=16))


def _model(data: TaskData, cfg: ModelConfig = CFG) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg, data.input_dim, data.num_labels).eval()


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return predict_logits(lambda xb: model(torch.from_numpy(xb)).numpy(), x)


def _save(
    model: torch.nn.Module, data: TaskData, path: Path, cfg: ModelConfig = CFG, quantized: dict | None = None
) -> Path:
    save_model(model, path, cfg.model_dump(mode="json"), data.input_dim, data.labels, data.preprocessing, quantized)
    return path


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_load_model_predicts_exactly_as_saved(tmp_path: Path, task: tuple[Path, TaskData], kind: str) -> None:
    _, data = task
    model = _model(data)
    quantized = int8_weight_only(model) if kind == "int8" else None
    path = _save(model, data, tmp_path / "m.msz", quantized=quantized)
    loaded, meta = load_model(path)
    assert not loaded.training
    assert meta["labels"] == data.labels and meta["preprocessing"] == data.preprocessing
    assert meta["model"] == CFG.model_dump(mode="json") and meta["input_dim"] == data.input_dim
    assert np.array_equal(_logits(loaded, data.x_test), _logits(model, data.x_test))


def test_load_model_uses_the_saved_architecture(tmp_path: Path, task: tuple[Path, TaskData]) -> None:
    _, data = task
    wide = ModelConfig(embed_dim=12, hidden=5)  # e.g. a structurally pruned or distilled model
    model = _model(data, wide)
    loaded, _ = load_model(_save(model, data, tmp_path / "w.msz", cfg=wide))
    assert loaded.lstm.hidden_size == 5 and np.array_equal(_logits(loaded, data.x_test), _logits(model, data.x_test))


def test_loading_a_file_does_not_start_torchs_compiler(tmp_path: Path, task: tuple[Path, TaskData]) -> None:
    # The shape check builds the model on the meta device without initialising it: meta normal_ imports
    # torch._dynamo (1.3-1.8 s and ~70 MB of every cold start in torch, measured 2026-12-01).
    import subprocess
    import sys

    _, data = task
    path = _save(_model(data), data, tmp_path / "m.msz")
    code = ("import sys; from modelshrink.export.compact import load_model; load_model(sys.argv[1]); "
            "print('torch._dynamo' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path: Path, task: tuple[Path, TaskData]) -> None:
    _, data = task
    path = tmp_path / "m.msz"
    save_model(_model(data), path, ModelConfig(hidden=9).model_dump(mode="json"), data.input_dim, data.labels, {})
    with pytest.raises(ArtifactError, match="describes a model whose tensors .* differ from the file.s"):
        load_model(path)


def test_eval_prints_the_accuracy_of_the_file(
    tmp_path: Path, task: tuple[Path, TaskData], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, data = task
    model = _model(data)
    quantized = int8_weight_only(model)
    path = _save(model, data, tmp_path / "q.msz", quantized=quantized)
    assert main(["eval", str(path), "--data", str(csv)]) == 0
    out = capsys.readouterr().out
    # The same figure computed here from the in-memory model on the whole CSV, encoded by its tokenizer.
    all_x = np.concatenate([data.x_train, data.x_val, data.x_test])
    all_y = np.concatenate([data.y_train, data.y_val, data.y_test])
    expected = classification_metrics(all_y, _logits(model, all_x), data.num_labels)
    assert f"accuracy {expected['accuracy']:.4f}" in out and f"macro-F1 {expected['macro_f1']:.4f}" in out
    assert "rows 200" in out and "int8 per-channel" in out


def _corrupt(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "payload":
        data[-10] ^= 0xFF
    elif how == "version":
        struct.pack_into("<H", data, len(MAGIC), 1)
    elif how == "not-modelshrink":
        data = bytearray(b"text,label\nhello,joy\n")
    elif how == "pickle":
        data = bytearray(pickle.dumps({"w": [1.0, 2.0]}))
    out = path.with_name(f"{how}.msz")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("how", "message"),
    [("truncated", "truncated"), ("payload", "checksum"), ("version", "version 1"),
     ("not-modelshrink", "not a modelshrink compact file"), ("pickle", "not a modelshrink compact file")],
)  # fmt: skip
def test_eval_rejects_bad_files_with_exit_2(
    tmp_path: Path, task: tuple[Path, TaskData], capsys: pytest.CaptureFixture[str], how: str, message: str
) -> None:
    csv, data = task
    bad = _corrupt(_save(_model(data), data, tmp_path / "m.msz"), how)
    assert main(["eval", str(bad), "--data", str(csv)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_eval_rejects_unknown_labels_and_missing_files(
    tmp_path: Path, task: tuple[Path, TaskData], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, data = task
    path = _save(_model(data), data, tmp_path / "m.msz")
    other = tmp_path / "other.csv"
    other.write_text("text,label\ni am happy,ecstatic\n")
    assert main(["eval", str(path), "--data", str(other)]) == 2
    assert "'ecstatic'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.msz"), "--data", str(csv)]) == 2
    assert "does not exist" in capsys.readouterr().err
