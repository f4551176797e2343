"""ONNX export in every format: numerics against torch, dynamic axes, sizes, what int8 covers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelshrink.errors import ArtifactError, ConfigError, IncompatibleModelError
from modelshrink.export import formats
from modelshrink.export import onnx as onnx_export
from modelshrink.export.onnx import OnnxClassifier, export_onnx, onnx_weight_stats
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.lstm import LSTMClassifier

VOCAB = 200


def _tokens(n: int, t: int, seed: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def _torch_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


@pytest.fixture(scope="module")
def trained_lstm() -> LSTMClassifier:
    """A tiny LSTM trained a little (label = last token // 50), so its logits have real margins.

    A random model's logits nearly tie, and int8 rounding flips such ties; a trained model
    is the honest test of whether quantization keeps its predictions.
    """
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=VOCAB, num_labels=4, embed_dim=16, hidden=16, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    gen = torch.Generator().manual_seed(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is several times faster than two
    try:
        for _ in range(40):  # ~80% accuracy on the rule: margins, not a polished model
            x = torch.randint(1, VOCAB, (32, 10), generator=gen)
            loss = nn.functional.cross_entropy(model(x), x[:, -1] // 50)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def lstm_files(trained_lstm: LSTMClassifier, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lstm_onnx")
    example = _tokens(3, 12, seed=2)
    calibration = [_tokens(32, 10, seed=10 + i) for i in range(4)]
    return {
        fmt: export_onnx(trained_lstm, example, out / f"{fmt}.onnx", fmt, calibration=calibration)
        for fmt in onnx_export.FORMATS
    }


@pytest.fixture(scope="module")
def big_embedding_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An LSTM whose 2000x32 embedding dominates its size, as in the reference model."""
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=2000, num_labels=4, embed_dim=32, hidden=16)
    out = tmp_path_factory.mktemp("big_onnx")
    example = torch.randint(1, 2000, (2, 8))
    return {fmt: export_onnx(model, example, out / f"{fmt}.onnx", fmt) for fmt in ("fp32", "fp16", "int8_dynamic")}


def test_fp32_lstm_matches_torch_at_other_batch_and_length(
    trained_lstm: LSTMClassifier, lstm_files: dict[str, Path]
) -> None:
    clf = OnnxClassifier(lstm_files["fp32"])
    for n, t in [(5, 20), (1, 7), (3, 12)]:  # the example was (3, 12)
        x = _tokens(n, t, seed=n * 100 + t)
        np.testing.assert_allclose(clf.predict_logits(x.numpy()), _torch_logits(trained_lstm, x), atol=1e-4)


def test_fp32_cnn_matches_torch_at_other_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyCNN(num_labels=3, channels=4)
    path = export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "cnn.onnx")
    x = torch.randn(7, 1, 8, 8)
    np.testing.assert_allclose(OnnxClassifier(path).predict_logits(x.numpy()), _torch_logits(model, x), atol=1e-4)


def test_int8_dynamic_agrees_with_fp32_on_trained_lstm(lstm_files: dict[str, Path]) -> None:
    x = _tokens(500, 10, seed=3).numpy()
    ref = OnnxClassifier(lstm_files["fp32"]).predict_logits(x)
    for fmt in ("int8_dynamic", "int8_static"):
        got = OnnxClassifier(lstm_files[fmt]).predict_logits(x)
        agreement = float((got.argmax(1) == ref.argmax(1)).mean())
        assert agreement >= 0.95, f"{fmt}: argmax agrees with fp32 on only {agreement:.1%}"


def test_fp16_close_to_fp32(lstm_files: dict[str, Path]) -> None:
    x = _tokens(200, 10, seed=4).numpy()
    ref = OnnxClassifier(lstm_files["fp32"]).predict_logits(x)
    got = OnnxClassifier(lstm_files["fp16"]).predict_logits(x)
    assert got.dtype == np.float32  # keep_io_types: callers see float32 logits
    np.testing.assert_allclose(got, ref, atol=1e-2)
    assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.99


def test_sizes_of_quantized_files(big_embedding_files: dict[str, Path]) -> None:
    fp32 = big_embedding_files["fp32"].stat().st_size
    fp16 = big_embedding_files["fp16"].stat().st_size
    int8 = big_embedding_files["int8_dynamic"].stat().st_size
    assert 0.45 < fp16 / fp32 < 0.55
    # int8 weights: a quarter of float32, plus scales and graph overhead.
    assert int8 / fp32 < 0.3


def test_int8_dynamic_quantizes_embedding_lstm_and_linear(big_embedding_files: dict[str, Path]) -> None:
    stats = onnx_weight_stats(big_embedding_files["int8_dynamic"])
    by_name = {i["name"]: i for i in stats["initializers"]}
    # ORT quantizes Gather's table with the activation type: uint8 with a zero point.
    assert by_name["embedding.weight_quantized"]["dtype"] == "uint8"
    assert stats["op_types"].get("DynamicQuantizeLSTM") == 1  # LSTM W and R are int8
    lstm_int8 = [i for i in stats["initializers"] if i["dtype"] == "int8" and i["elements"] >= 4 * 16 * 16]
    assert len(lstm_int8) == 2
    assert stats["op_types"].get("MatMulInteger") == 1  # the Linear (Gemm rewritten to MatMul)
    assert "Gemm" not in stats["op_types"]
    # What stays float: LSTM biases, Linear bias, scales.
    assert stats["float_bytes"] < 0.02 * stats["total_bytes"]


def test_int8_static_quantizes_embedding_and_linear_not_lstm(lstm_files: dict[str, Path]) -> None:
    stats = onnx_weight_stats(lstm_files["int8_static"])
    dtypes = {i["name"]: i["dtype"] for i in stats["initializers"]}
    assert dtypes["embedding.weight_quantized"] == "uint8"
    assert dtypes["fc.weight_quantized"] == "int8"
    # ONNX Runtime has no QDQ LSTM: its weights stay float32 in static mode (documented).
    assert stats["op_types"]["LSTM"] == 1
    assert stats["bytes_by_dtype"]["float32"] >= 4 * (4 * 16 * 16 + 4 * 16 * 16)


def test_int8_static_needs_calibration(trained_lstm: LSTMClassifier, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        export_onnx(trained_lstm, _tokens(2, 5, seed=0), tmp_path / "s.onnx", "int8_static")
    assert not (tmp_path / "s.onnx").exists()


def test_cnn_int8_formats_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyCNN(num_labels=3, channels=4)
    x = torch.randn(50, 1, 8, 8)
    ref = _torch_logits(model, x)
    for fmt in ("fp16", "int8_dynamic", "int8_static"):
        path = export_onnx(model, x[:2], tmp_path / f"{fmt}.onnx", fmt, calibration=[x[:16], x[16:32]])
        got = OnnxClassifier(path).predict_logits(x.numpy())
        assert got.shape == (50, 3)
        np.testing.assert_allclose(got, ref, atol=0.05)


def test_export_keeps_training_mode_and_is_quiet(
    trained_lstm: LSTMClassifier, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    trained_lstm.train()
    try:
        export_onnx(trained_lstm, _tokens(2, 5, seed=0), tmp_path / "d.onnx", "int8_dynamic")
        assert trained_lstm.training
    finally:
        trained_lstm.eval()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_failed_export_leaves_no_file(
    trained_lstm: LSTMClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(src: Path, dst: Path, calibration: object, input_name: str) -> None:
        dst.write_bytes(b"half a file")
        raise RuntimeError("crash mid-write")

    monkeypatch.setitem(formats.FORMATS, "fp16", dataclasses.replace(formats.FORMATS["fp16"], convert=boom))
    target = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError, match="crash"):
        export_onnx(trained_lstm, _tokens(2, 5, seed=0), target, "fp16")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(trained_lstm: LSTMClassifier, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8_dynamic"):
        export_onnx(trained_lstm, _tokens(2, 5, seed=0), tmp_path / "x.onnx", "int4")  # type: ignore[arg-type]


def test_classifier_batches_and_errors(lstm_files: dict[str, Path], tmp_path: Path) -> None:
    clf = OnnxClassifier(lstm_files["fp32"], threads=2)
    assert clf.input_name == "input"
    x = _tokens(37, 9, seed=5).numpy()
    np.testing.assert_allclose(clf.predict_logits(x, batch_size=8), clf.predict_logits(x, batch_size=256), atol=1e-6)
    assert clf.predict_logits(x[:0]).shape == (0, 4)
    with pytest.raises(ConfigError):
        OnnxClassifier(lstm_files["fp32"], threads=0)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ArtifactError, match="bad.onnx"):
        OnnxClassifier(bad)
    with pytest.raises(ArtifactError):
        OnnxClassifier(tmp_path / "missing.onnx")


def test_weight_stats_fp32(lstm_files: dict[str, Path]) -> None:
    stats = onnx_weight_stats(lstm_files["fp32"])
    params = 200 * 16 + 4 * 16 * (16 + 16) + 2 * 4 * 16 + 16 * 4 + 4
    assert stats["bytes_by_dtype"] == {"float32": 4 * params}
    assert stats["int8_bytes"] == 0


class _Unexportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent Python control flow: neither exporter can follow it
            raise ValueError("positive input")
        return self.fc(x)


def test_unexportable_model_raises_quietly(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(IncompatibleModelError, match="TorchScript exporter.*torch.export exporter"):
        export_onnx(_Unexportable(), torch.ones(2, 3), tmp_path / "u.onnx")
    assert list(tmp_path.iterdir()) == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""
