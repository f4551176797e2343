"""quant.qat: fake quantization, its int8 ONNX file (the very weights QAT simulated), preserved properties."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from modelshrink.data.synthetic import tiny_batches, tiny_fine_tune
from modelshrink.errors import ConfigError
from modelshrink.export.onnx import OnnxClassifier, export_onnx, onnx_weight_stats
from modelshrink.models import LSTMClassifier, TinyCNN
from modelshrink.techniques.base import RunContext
from modelshrink.techniques.cluster_kmeans import KMeansClusterConfig, cluster_kmeans
from modelshrink.techniques.prune_magnitude import MagnitudePruneConfig, prune_magnitude
from modelshrink.techniques.quant_qat import QATConfig, fake_quant, quant_qat


def _ctx(kind: str) -> RunContext:
    batches = tiny_batches(kind, 6)

    fine_tune = tiny_fine_tune(batches)

    return RunContext(example_input=batches[0][0], fine_tune=fine_tune)


def _lstm() -> nn.Module:
    torch.manual_seed(0)
    return LSTMClassifier(vocab_size=50, num_labels=3, embed_dim=8, hidden=8).eval()


def _int8_tensors(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ONNX weight name → (int8 values, scales) from the DequantizeLinear pairs the exporter wrote."""
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    return {n.removesuffix("_int8"): (v, inits[n.removesuffix("_int8") + "_scale"])
            for n, v in inits.items() if n.endswith("_int8")}  # fmt: skip


def test_fake_quant_is_a_symmetric_int8_grid_per_channel() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 20) * torch.arange(1, 7).reshape(6, 1)  # rows of very different ranges
    q = fake_quant(w, axis=0)
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
    assert ((q - w).abs() <= scale / 2 + 1e-6).all()  # round to nearest
    assert torch.equal(fake_quant(q, axis=0), q)  # idempotent: QAT's output is a fixed point


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_qat_trains_and_onnx_runtime_runs_the_weights_it_simulated(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _lstm() if kind == "lstm" else TinyCNN(num_labels=3, channels=4).eval()
    ctx = _ctx(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = quant_qat(copy.deepcopy(model), QATConfig(epochs=2), ctx)
    assert res.export_format == "int8_weights" and res.details["steps"] == 12
    assert any(not torch.equal(v, before[k]) for k, v in res.model.state_dict().items())  # it trained
    for name, p in res.model.named_parameters():
        if name.endswith("weight") or "weight_" in name:
            axis = 1 if name.startswith("embedding") else 0
            assert torch.allclose(fake_quant(p.detach(), axis), p.detach(), rtol=0, atol=1e-7)  # on the grid
    path = export_onnx(res.model, ctx.example_input, tmp_path / "m.onnx", "int8_weights")
    stats = onnx_weight_stats(path)
    assert stats["int8_bytes"] > stats["float_bytes"] and stats["op_types"]["DequantizeLinear"] >= 3
    # The file holds the weights QAT simulated: int8 × scale equals the torch weight.
    int8 = _int8_tensors(path)
    torch_w = dict(res.model.named_parameters())
    checked = 0
    for onnx_name, (q, scale) in int8.items():
        if onnx_name in torch_w:  # Gather/Gemm/Conv weights keep their torch names and layout
            w = torch_w[onnx_name].detach().numpy()
            shape = [1] * w.ndim
            shape[1 if onnx_name.startswith("embedding") else 0] = -1
            np.testing.assert_allclose(q * scale.reshape(shape if scale.ndim else ()), w, rtol=1e-6, atol=1e-9)
            checked += 1
    assert checked >= 2
    logits = OnnxClassifier(path).predict_logits(ctx.example_input.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(logits, res.model(ctx.example_input).numpy(), atol=1e-4)


def test_ptq_epochs_zero_changes_weights_only_by_rounding() -> None:
    model = _lstm()
    res = quant_qat(copy.deepcopy(model), QATConfig(epochs=0), RunContext(example_input=torch.zeros(1, 3).long()))
    assert res.details["steps"] == 0
    w0, w1 = model.lstm.weight_hh_l0.detach(), res.model.lstm.weight_hh_l0.detach()
    assert ((w1 - w0).abs() <= w0.abs().amax(dim=1, keepdim=True) / 254 + 1e-7).all()


def test_preserve_sparsity_keeps_zeros_through_training_and_export(tmp_path: Path) -> None:
    ctx = _ctx("lstm")
    pruned = prune_magnitude(_lstm(), MagnitudePruneConfig(final_sparsity=0.7, epochs=0), ctx).model
    zeros = {n: (p == 0) for n, p in pruned.named_parameters() if "weight" in n and p.dim() == 2}
    kept = quant_qat(copy.deepcopy(pruned), QATConfig(epochs=2, preserve_sparsity=True), ctx).model
    for n, z in zeros.items():
        assert (dict(kept.named_parameters())[n][z] == 0).all(), n
    path = export_onnx(kept, ctx.example_input, tmp_path / "m.onnx", "int8_weights")
    q, _ = _int8_tensors(path)["embedding.weight"]
    assert (q[zeros["embedding.weight"].numpy()] == 0).all()
    # The property is real: without the option, training moves pruned weights off zero.
    lost = quant_qat(copy.deepcopy(pruned), QATConfig(epochs=2), ctx).model
    assert (lost.embedding.weight[zeros["embedding.weight"]] != 0).any()


def test_preserve_clusters_keeps_at_most_k_values_per_tensor_through_export(tmp_path: Path) -> None:
    ctx = _ctx("lstm")
    clustered = cluster_kmeans(_lstm(), KMeansClusterConfig(clusters=8, epochs=0), ctx).model
    res = quant_qat(copy.deepcopy(clustered), QATConfig(epochs=2, preserve_clusters=True), ctx)
    assert res.details["steps"] == 12 and max(res.details["distinct_values"].values()) <= 8
    assert not torch.equal(res.model.fc.weight, clustered.fc.weight)  # the centroids trained
    path = export_onnx(res.model, ctx.example_input, tmp_path / "m.onnx", "int8_weights")
    for name, (q, scale) in _int8_tensors(path).items():
        assert len(np.unique(q)) <= 8 and scale.ndim == 0, name  # stored per tensor, k values kept
    # Per-channel QAT of the same model breaks the property (k values become up to k per channel).
    broken = quant_qat(copy.deepcopy(clustered), QATConfig(epochs=0), ctx).model
    assert torch.unique(broken.lstm.weight_hh_l0).numel() > 8


def test_preserve_clusters_on_an_unclustered_model_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"distinct values, not a clustered tensor.*cluster.kmeans"):
        quant_qat(_lstm(), QATConfig(epochs=0, preserve_clusters=True), RunContext(example_input=torch.zeros(1, 2)))
