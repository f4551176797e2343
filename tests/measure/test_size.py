"""Size figures: parameter counts, nonzeros, distinct values, file and compressed bytes."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch
import zstandard
from torch import nn

from modelshrink.errors import ArtifactError
from modelshrink.measure.size import file_sizes, model_stats
from modelshrink.models.lstm import LSTMClassifier


def test_model_stats_counts() -> None:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 1.0, 2.0, 0.0], [1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, -1.0]]))
        model.bias.copy_(torch.tensor([0.5, 0.0, 0.25]))
    stats = model_stats(model)
    assert stats["parameters"] == 15
    assert stats["nonzeros"] == 6 + 2
    assert stats["distinct_values"] == {"weight": 4, "bias": 3}
    assert stats["distinct_values_max"] == 4
    assert stats["dense_fp32_bytes"] == 60


def test_clustered_lstm_distinct_values_ignore_biases() -> None:
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=200, num_labels=4, embed_dim=16, hidden=16)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:  # cluster the weight matrices to 16 values, leave biases alone
                centroids = torch.linspace(-0.5, 0.5, 16)
                p.copy_(centroids[(p.unsqueeze(-1) - centroids).abs().argmin(-1)])
    stats = model_stats(model)
    params = 200 * 16 + 4 * 16 * (16 + 16) + 2 * 4 * 16 + 16 * 4 + 4
    assert stats["parameters"] == params
    assert stats["dense_fp32_bytes"] == 4 * params
    assert stats["distinct_values_max"] <= 16
    assert stats["distinct_values"]["lstm.bias_ih_l0"] > 16  # biases keep their values


def test_file_sizes_match_gzip_and_zstd(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    # Half zeros, half random bytes, over several read chunks: compresses to about half.
    data = bytes(3 << 20) + os.urandom(3 << 20)
    path.write_bytes(data)
    sizes = file_sizes(path)
    assert sizes["file_bytes"] == len(data)
    assert sizes["gzip_bytes"] == len(gzip.compress(data, compresslevel=9, mtime=0))
    one_shot = len(zstandard.ZstdCompressor(level=19).compress(data))
    assert abs(sizes["zstd_bytes"] - one_shot) <= 0.01 * one_shot
    assert 0.45 < sizes["zstd_bytes"] / len(data) < 0.55


def test_file_sizes_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    sizes = file_sizes(empty)
    assert sizes["file_bytes"] == 0 and sizes["gzip_bytes"] > 0 and sizes["zstd_bytes"] > 0
    with pytest.raises(ArtifactError, match="missing.bin"):
        file_sizes(tmp_path / "missing.bin")


def test_file_sizes_compress_the_same_bytes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import modelshrink.measure.size as size

    calls: list[Path] = []
    real = size._compressed_sizes
    monkeypatch.setattr(size, "_compressed_sizes", lambda p: calls.append(p) or real(p))
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(os.urandom(1000))
    b.write_bytes(a.read_bytes())
    first = file_sizes(a)
    assert file_sizes(b) == first and len(calls) == 1  # same bytes elsewhere: not compressed again
    a.write_bytes(bytes(1000))  # same path and size, other bytes: measured again
    again = file_sizes(a)
    assert len(calls) == 2 and again["file_bytes"] == 1000 and again["gzip_bytes"] < first["gzip_bytes"]
