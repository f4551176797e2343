"""prune.structured: smaller dense tensors, right output shapes, a rebuildable model, clear errors."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modelshrink.data.synthetic import tiny_batches
from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.export.compact import load_compact, save_compact
from modelshrink.export.onnx import OnnxClassifier, export_onnx
from modelshrink.models import LSTMClassifier, ModelConfig, TinyCNN, build_model
from modelshrink.techniques.base import OnStep, RunContext
from modelshrink.techniques.prune_structured import StructuredPruneConfig, prune_structured

VOCAB, LABELS = 50, 3


def tiny_ctx(kind: str, with_training: bool = True) -> RunContext:
    """Adam + cross-entropy over 4 random batches per epoch, on_step after each step."""
    batches = tiny_batches(kind, 4, vocab_size=VOCAB, num_labels=LABELS)

    def fine_tune(model: nn.Module, epochs: int, on_step: OnStep | None, params: Sequence[nn.Parameter] | None) -> None:
        opt = torch.optim.Adam(list(params) if params is not None else model.parameters(), lr=1e-2)
        model.train()
        for _ in range(epochs):
            for step, (x, y) in enumerate(batches, 1):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
                if on_step is not None:
                    on_step(step)
        model.eval()

    return RunContext(example_input=batches[0][0], seed=0, steps_per_epoch=4,
                      fine_tune=fine_tune if with_training else None, num_labels=LABELS)  # fmt: skip


def lstm(hidden: int = 8, embed: int = 8) -> LSTMClassifier:
    torch.manual_seed(0)
    return LSTMClassifier(VOCAB, LABELS, embed_dim=embed, hidden=hidden, dropout=0.0).eval()


def cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(num_labels=LABELS, channels=4).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def kill_lstm_units(model: LSTMClassifier, units: list[int]) -> None:
    """Zero every weight and bias of these hidden units: they then output exactly 0 forever."""
    h = model.lstm.hidden_size
    rows = [u + g * h for g in range(4) for u in units]
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        getattr(model.lstm, name)[rows] = 0.0
    model.lstm.weight_hh_l0[:, units] = 0.0
    model.fc.weight[:, units] = 0.0


def test_lstm_shrinks_and_rebuilds_from_its_config(tmp_path: Path) -> None:
    model = lstm()
    cfg = StructuredPruneConfig(unit_sparsity=0.5, embed_dim_sparsity=0.25, vocab_keep=20, epochs=1)
    res = prune_structured(copy.deepcopy(model), cfg, tiny_ctx("lstm"))
    pruned = res.model
    assert (pruned.lstm.hidden_size, pruned.lstm.input_size, pruned.embedding.num_embeddings) == (4, 6, 20)
    assert n_params(pruned) < 0.5 * n_params(model)
    assert res.details["parameters_after"] == n_params(pruned) < res.details["parameters_before"]
    x = tiny_batches("lstm", 1, vocab_size=VOCAB)[0][0]
    assert pruned(x).shape == model(x).shape == (8, LABELS)
    # ids >= vocab_keep read as OOV (1), in the model itself
    assert torch.equal(pruned(x), pruned(x.masked_fill(x >= 20, 1)))
    # The returned config rebuilds the model; the compact file round-trips its weights.
    assert res.model_config.vocab_keep == 20 and res.input_dim == VOCAB
    save_compact(pruned.state_dict(), tmp_path / "w.msz", {})
    rebuilt = build_model(res.model_config, res.input_dim, LABELS).eval()
    rebuilt.load_state_dict(load_compact(tmp_path / "w.msz")[0])
    torch.testing.assert_close(rebuilt(x), pruned(x))
    # The ONNX file maps rare ids itself (clamp in the graph).
    onnx_path = export_onnx(pruned, x, tmp_path / "m.onnx", "fp32")
    far = x.clone()
    far[:, 0] = VOCAB - 1
    got = OnnxClassifier(onnx_path).predict_logits(far.numpy())
    np.testing.assert_allclose(got, pruned(far).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_dead_lstm_units_are_the_ones_removed_and_outputs_do_not_change(importance: str) -> None:
    model = lstm()
    kill_lstm_units(model, [0, 2, 5, 7])
    cfg = StructuredPruneConfig(unit_sparsity=0.5, importance=importance, epochs=0)  # type: ignore[arg-type]
    res = prune_structured(copy.deepcopy(model), cfg, tiny_ctx("lstm"))
    x = tiny_batches("lstm", 1, vocab_size=VOCAB)[0][0]
    # A unit with no weights outputs 0 and feeds nothing: cutting exactly those keeps the function.
    torch.testing.assert_close(res.model(x), model(x), rtol=1e-5, atol=1e-6)
    assert res.details["removed"]["lstm_hidden_units"] == {"before": 8, "after": 4}


def test_taylor_importance_leaves_the_weights_alone() -> None:
    model = lstm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune_structured(model, StructuredPruneConfig(importance="taylor", epochs=0), tiny_ctx("lstm"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cnn_channels_shrink_and_dead_channels_go_first() -> None:
    model = cnn()
    with torch.no_grad():  # conv1 channels 1 and 3 dead: zero filter and bias, so relu output is 0
        model.conv1.weight[[1, 3]] = 0.0
        model.conv1.bias[[1, 3]] = 0.0
    res = prune_structured(copy.deepcopy(model), StructuredPruneConfig(unit_sparsity=0.5, epochs=0), tiny_ctx("cnn"))
    assert (res.model.conv1.out_channels, res.model.conv2.out_channels) == (2, 4)
    assert res.model_config == ModelConfig(name="cnn", channels=2, channels2=4)
    rebuilt = build_model(res.model_config, 1, LABELS)
    rebuilt.load_state_dict(res.model.state_dict())
    x = tiny_batches("cnn", 1)[0][0]
    assert res.model(x).shape == (8, LABELS)
    assert n_params(res.model) < n_params(model)
    # the dead channels are the ones cut: conv1 keeps filters 0 and 2
    torch.testing.assert_close(res.model.conv1.weight, model.conv1.weight[[0, 2]])
    assert any(s.name == "fc" for s in res.skipped)


def test_fine_tuning_runs_after_the_cut() -> None:
    model = lstm()
    cut_only = prune_structured(copy.deepcopy(model), StructuredPruneConfig(epochs=0), tiny_ctx("lstm")).model
    tuned = prune_structured(copy.deepcopy(model), StructuredPruneConfig(epochs=2), tiny_ctx("lstm")).model
    assert not torch.equal(cut_only.fc.weight, tuned.fc.weight)


def test_removing_every_unit_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="remove every one of the 1 LSTM hidden units"):
        prune_structured(lstm(hidden=1), StructuredPruneConfig(unit_sparsity=0.9, epochs=0), tiny_ctx("lstm"))


def test_unknown_model_and_missing_training_are_clear_errors() -> None:
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(IncompatibleModelError, match="Sequential"):
        prune_structured(mlp, StructuredPruneConfig(epochs=0), tiny_ctx("lstm"))
    with pytest.raises(ConfigError, match="taylor"):
        prune_structured(lstm(), StructuredPruneConfig(importance="taylor", epochs=0), tiny_ctx("lstm", False))
    with pytest.raises(ConfigError, match="epochs=0"):
        prune_structured(lstm(), StructuredPruneConfig(epochs=2), tiny_ctx("lstm", False))
    with pytest.raises(ValueError, match="vocab_keep"):
        StructuredPruneConfig(vocab_keep=1)


def test_unset_new_model_fields_leave_config_dumps_and_hashes_unchanged() -> None:
    assert set(ModelConfig().model_dump()) == {"name", "embed_dim", "hidden", "dropout", "l2_input", "channels"}
    for cfg in (ModelConfig(vocab_keep=100, embed_rank=4), ModelConfig(name="cnn", channels2=3)):
        assert ModelConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_a_vocabulary_pruned_variant_carries_only_the_words_it_reads() -> None:
    from modelshrink.data.text import OOV, Tokenizer
    from modelshrink.runner.measure import variant_preprocessing

    texts = ["a b c d e f", "a a b b c", "d e f g h", "a b z"]
    full = Tokenizer(vocab_size=12, max_len=6).fit(texts)
    pre = {"kind": "text", "labels": ["x"], "tokenizer": full.to_dict()}
    cut = variant_preprocessing(pre, ModelConfig(vocab_keep=5))
    small = Tokenizer.from_dict(cut["tokenizer"])
    assert len(small.vocab) == 3 and small.vocab == full.vocab[:3]
    ids = full.encode(texts)
    assert np.array_equal(small.encode(texts), np.where(ids >= 5, OOV, ids))  # what the model's own clamp does
    assert variant_preprocessing(pre, ModelConfig()) is pre  # no vocab_keep: unchanged
