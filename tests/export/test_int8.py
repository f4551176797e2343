"""The one int8 grid: QAT's fake_quant, the compact file and the ONNX int8_weights file agree bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from modelshrink.errors import UnknownNameError
from modelshrink.export.compact import load_compact, save_compact
from modelshrink.export.formats import FORMATS, always_written, compact_model, get_format
from modelshrink.export.int8 import dequantize_int8, fake_quant, int8_grid, int8_weight_only
from modelshrink.export.onnx import export_onnx


def _round_trip(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    quantized = int8_weight_only(model)
    save_compact(model.state_dict(), path, {}, quantized=quantized)
    return load_compact(path)[0]


def test_per_tensor_grid_keeps_its_k_values_through_the_compact_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12))
    with torch.no_grad():  # 5 distinct values on one per-tensor grid, as quant.qat preserve_clusters leaves them
        centroids = fake_quant(torch.tensor([-0.9, -0.3, 0.0, 0.2, 0.7]), None)
        model[0].weight.copy_(centroids[torch.randint(0, 5, (12, 16))])
    weight = model[0].weight.detach().clone()
    back = _round_trip(model, tmp_path / "k.mshk")["0.weight"]
    assert torch.unique(back).numel() == 5
    assert torch.equal(back, weight)  # kept exactly, not re-quantized per channel


def test_per_channel_grid_is_kept_exactly(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Embedding(30, 8), nn.Flatten(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight.copy_(fake_quant(model[0].weight, 1))
        model[2].weight.copy_(fake_quant(model[2].weight, 0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    back = _round_trip(model, tmp_path / "c.mshk")
    assert torch.equal(back["0.weight"], before["0.weight"]) and torch.equal(back["2.weight"], before["2.weight"])


def test_onnx_compact_and_fake_quant_dequantize_identically(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() == 2}
    simulated = {n: fake_quant(w, 0) for n, w in weights.items()}  # what quant.qat trains on
    path = export_onnx(model, torch.randn(2, 12), tmp_path / "m.onnx", "int8_weights")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    compact = _round_trip(model, tmp_path / "m.mshk")
    for name, w in weights.items():
        q, scale = inits[f"{name}_int8"], inits[f"{name}_scale"]
        from_onnx = torch.from_numpy(q.astype(np.float32) * scale.reshape(-1, 1))
        assert torch.equal(from_onnx, simulated[name]), name
        assert torch.equal(compact[name], simulated[name]), name
        assert torch.equal(dequantize_int8(int8_grid(w, 0)), simulated[name]), name


def test_format_registry() -> None:
    assert [f.name for f in always_written()] == ["fp32", "fp16", "int8_dynamic"]
    assert get_format("int8_static").artifact == "onnx_int8_static" and get_format("int8_static").needs_calibration
    assert [f.artifact for f in FORMATS.values()] == [
        "onnx_fp32", "onnx_fp16", "onnx_int8", "onnx_int8_static", "onnx_int8_weights",
    ]  # fmt: skip
    with pytest.raises(UnknownNameError, match="int8_dynamic"):
        get_format("int4")


def test_compact_model_per_format() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    same, none, label = compact_model(model, get_format("fp32"))
    assert same is model and none is None and label == "float32"
    half, _, label = compact_model(model, get_format("fp16"))
    assert label == "float16" and torch.equal(half[0].weight, model[0].weight.half().float())
    q, quantized, label = compact_model(model, get_format("int8_weights"))
    assert label == "int8 per-channel weight-only" and quantized is not None and set(quantized) == {"0.weight"}
    assert q is not model and torch.equal(q[0].weight, fake_quant(model[0].weight.detach(), 0))
