"""prune.transformer: whole attention heads and FFN neurons cut out of a tiny BERT / DistilBERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from modelshrink.data.synthetic import synthetic_text_task  # noqa: E402
from modelshrink.errors import IncompatibleModelError  # noqa: E402
from modelshrink.export.compact import load_model, save_model  # noqa: E402
from modelshrink.export.onnx import OnnxClassifier, export_onnx  # noqa: E402
from modelshrink.models import LSTMClassifier  # noqa: E402
from modelshrink.models.builders import ModelConfig, build_model, saved_config  # noqa: E402
from modelshrink.models.hf_prune import HEADS_KEY, blocks  # noqa: E402
from modelshrink.techniques import RunContext, get_technique  # noqa: E402
from modelshrink.techniques.prune_transformer import TransformerPruneConfig  # noqa: E402
from modelshrink.train import TrainConfig, fine_tune  # noqa: E402

DATA = synthetic_text_task(n=96, vocab_size=64, max_len=12)
HIDDEN, HEADS, FFN = 32, 4, 64  # head size 8


def _bert(kind: str = "bert") -> tuple[torch.nn.Module, ModelConfig]:
    from transformers import BertConfig, DistilBertConfig

    if kind == "bert":
        hf = BertConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=32)  # fmt: skip
    else:
        hf = DistilBertConfig(vocab_size=64, dim=HIDDEN, n_layers=2, n_heads=HEADS, hidden_dim=FFN,
                              max_position_embeddings=32)  # fmt: skip
    cfg = ModelConfig(name="hf", hf_config=json.loads(hf.to_json_string()))
    torch.manual_seed(0)
    return build_model(cfg, 64, DATA.num_labels).eval(), cfg


def _ctx(cfg: ModelConfig, data: bool = True) -> RunContext:
    train = TrainConfig(batch_size=16, threads=1)

    def tune(model: torch.nn.Module, epochs: int, on_step=None, params=None) -> None:  # noqa: ANN001
        fine_tune(model, DATA, train, seed=0, epochs=epochs, on_step=on_step, params=params)

    return RunContext(example_input=torch.from_numpy(DATA.x_train[:8]), model_config=cfg, input_dim=64,
                      num_labels=DATA.num_labels, fine_tune=tune if data else None)  # fmt: skip


def _apply(model: torch.nn.Module, cfg: ModelConfig, **fields: object):  # noqa: ANN202
    tcfg = TransformerPruneConfig(**{"importance": "l2", "epochs": 0, **fields})  # type: ignore[arg-type]
    return get_technique("prune.transformer").apply(model, tcfg, _ctx(cfg, tcfg.importance == "gradient"))


def test_heads_and_neurons_are_removed_and_the_saved_config_rebuilds_them(tmp_path: Path) -> None:
    model, cfg = _bert()
    x = torch.from_numpy(DATA.x_test)
    before = sum(p.numel() for p in model.parameters())
    onnx_before = export_onnx(model, x[:2], tmp_path / "before.onnx")
    res = _apply(model, cfg, head_sparsity=0.5, ffn_sparsity=0.25, scope="per_layer")
    pruned = res.model
    assert res.details["heads_per_layer"]["after"] == [2, 2] and [b.heads for b in blocks(pruned.model)] == [2, 2]
    # Per removed head: q, k, v lose 8 rows (8*32 weights + 8 biases each), o loses 8 columns (8*32);
    # per removed FFN neuron: one row of the first layer (32 + 1 bias) and one column of the second (32).
    per_head, per_neuron = 3 * (8 * HIDDEN + 8) + 8 * HIDDEN, 2 * HIDDEN + 1
    expected_drop = 2 * (2 * per_head + 16 * per_neuron)
    assert before - sum(p.numel() for p in pruned.parameters()) == expected_drop
    assert res.details["parameters_before"] - res.details["parameters_after"] == expected_drop

    # The returned config rebuilds the same shapes (strict load), also through the compact file.
    assert res.model_config.hf_config[HEADS_KEY] == [2, 2] and res.model_config.hf_config["intermediate_size"] == 48
    rebuilt = build_model(res.model_config, 64, DATA.num_labels).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    meta_cfg = saved_config(res.model_config.model_dump(mode="json"), pruned)
    save_model(pruned, tmp_path / "w.msz", meta_cfg, 64, DATA.labels, DATA.preprocessing)
    loaded, _ = load_model(tmp_path / "w.msz")
    with torch.no_grad():
        want = pruned(x)
        torch.testing.assert_close(rebuilt(x), want)
        torch.testing.assert_close(loaded(x), want)

    # ONNX: smaller, and agrees with torch on other batch and sequence sizes than it was traced on.
    onnx_after = export_onnx(pruned, x[:2, -5:], tmp_path / "after.onnx")
    assert onnx_after.stat().st_size < onnx_before.stat().st_size - 4 * expected_drop * 0.9
    np.testing.assert_allclose(OnnxClassifier(onnx_after).predict_logits(DATA.x_test, batch_size=5),
                               want.numpy(), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_gradient_importance_removes_a_head_zeroed_on_purpose() -> None:
    model, cfg = _bert()
    zeroed = 2
    with torch.no_grad():  # head 2 of layer 0 contributes nothing: |dL/d gate| is exactly 0
        blocks(model.model)[0].o.weight[:, zeroed * 8 : (zeroed + 1) * 8] = 0
    kept_q = blocks(model.model)[0].q.weight.detach().clone()
    res = _apply(model, cfg, importance="gradient", importance_batches=3, head_sparsity=0.125, ffn_sparsity=0.0)
    assert res.details["removed_heads"][0] == [zeroed] and res.details["heads_per_layer"]["after"] == [3, 4]
    # The importance pass moved no weight: the kept heads' query rows are the originals.
    rows = [r for r in range(HEADS * 8) if r // 8 != zeroed]
    torch.testing.assert_close(blocks(res.model.model)[0].q.weight, kept_q[rows], rtol=0, atol=0)
    assert not any(m._forward_pre_hooks for m in res.model.modules())


def test_ffn_width_is_the_same_in_every_layer_and_a_layer_keeps_one_head() -> None:
    model, cfg = _bert("distilbert")
    res = _apply(model, cfg, head_sparsity=0.9, ffn_sparsity=0.5)  # global: 7 of 8 asked, one per layer kept
    assert [b.ffn for b in blocks(res.model.model)] == [32, 32] and res.model_config.hf_config["hidden_dim"] == 32
    assert res.details["heads_per_layer"]["after"] == [1, 1]
    rebuilt = build_model(res.model_config, 64, DATA.num_labels)
    rebuilt.load_state_dict(res.model.state_dict())


def test_an_lstm_is_refused_by_name() -> None:
    lstm = LSTMClassifier(vocab_size=64, num_labels=3, embed_dim=8, hidden=8)
    with pytest.raises(IncompatibleModelError, match="model 'lstm' \\(LSTMClassifier\\) is not one"):
        get_technique("prune.transformer").apply(lstm, TransformerPruneConfig(), _ctx(ModelConfig(name="lstm")))
