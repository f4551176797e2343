"""lowrank: truncated SVD makes Embedding and Linear layers physically smaller, and rebuilds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models import LSTMClassifier, ModelConfig, TinyCNN, build_model
from modelshrink.techniques import RunContext
from modelshrink.techniques.lowrank import LowRankConfig, energy_rank, lowrank

CFG = ModelConfig(name="lstm", embed_dim=16, hidden=16)


def _lstm() -> nn.Module:
    torch.manual_seed(0)
    return build_model(CFG, 64, 3).eval()


def _ctx(model_config: ModelConfig | None = CFG) -> RunContext:
    return RunContext(example_input=torch.randint(0, 64, (8, 10)), model_config=model_config, input_dim=64,
                      num_labels=3)  # fmt: skip


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_energy_rank() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # squares 9, 4, 1: cumulative 9/14, 13/14, 1
    assert [energy_rank(s, e) for e in (0.5, 0.9, 0.93, 1.0)] == [1, 2, 3, 3]


def test_factored_lstm_is_smaller_keeps_shapes_and_rebuilds_from_its_config() -> None:
    model = _lstm()
    x = _ctx().example_input
    res = lowrank(copy.deepcopy(model), LowRankConfig(embed_rank=4, linear_rank=2, epochs=0), _ctx())
    assert res.details["ranks"] == {"embedding": 4, "fc": 2}
    assert _params(res.model) == _params(model) - 64 * 16 + 4 * (64 + 16) - 16 * 3 + 2 * (16 + 3)
    assert res.model(x).shape == model(x).shape
    assert res.model_config == CFG.model_copy(update={"embed_rank": 4, "fc_rank": 2})
    rebuilt = build_model(res.model_config, 64, 3).eval()
    rebuilt.load_state_dict(res.model.state_dict())  # strict: the compact file rebuilds it
    assert torch.equal(rebuilt(x), res.model(x))
    table = res.model.embedding[0].weight  # type: ignore[index]
    assert torch.count_nonzero(table[0]) == 0  # the padding row stays exactly zero


def test_exact_when_the_weight_has_that_rank() -> None:
    model = _lstm()
    with torch.no_grad():  # make the embedding rank 3 (padding row still zero)
        low = torch.randn(64, 3) @ torch.randn(3, 16)
        low[0] = 0.0
        model.embedding.weight.copy_(low)
    x = _ctx().example_input
    res = lowrank(copy.deepcopy(model), LowRankConfig(embed_rank=3, linear_rank=1, epochs=0), _ctx())
    emb_before = model.embedding(x)
    emb_after = res.model.embedding(x)  # type: ignore[operator]
    assert torch.allclose(emb_after, emb_before, atol=1e-5)
    assert res.details["energy_kept"]["embedding"] == pytest.approx(1.0)


def test_energy_and_layers_it_would_not_shrink() -> None:
    res = lowrank(_lstm(), LowRankConfig(energy=1.0, epochs=0), _ctx())
    # full rank at energy 1.0 never shrinks a layer: both listed as skipped, model unchanged
    assert {s.name for s in res.skipped} >= {"embedding", "fc"} and res.model_config is None
    assert all("would not shrink" in s.reason for s in res.skipped if s.name in ("embedding", "fc"))


def test_rank_not_below_min_dims_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"linear_rank=3 is not below min\(dims\)=3 of fc.weight"):
        lowrank(_lstm(), LowRankConfig(embed_rank=4, linear_rank=3, epochs=0), _ctx())
    with pytest.raises(ConfigError, match=r"embed_rank=16 is not below"):
        lowrank(_lstm(), LowRankConfig(embed_rank=16, epochs=0), _ctx())


def test_models_whose_config_cannot_rebuild_are_refused_but_library_use_factors() -> None:
    cnn = TinyCNN(num_labels=2, channels=4)
    with pytest.raises(IncompatibleModelError, match="'cnn'"):
        lowrank(cnn, LowRankConfig(epochs=0), _ctx(ModelConfig(name="cnn", channels=4)))
    ctx = RunContext(example_input=torch.randn(2, 1, 8, 8))  # library use: no config to keep in sync
    res = lowrank(copy.deepcopy(cnn), LowRankConfig(linear_rank=1, epochs=0), ctx)
    assert isinstance(res.model.fc, nn.Sequential) and _params(res.model) < _params(cnn)
    assert res.model(ctx.example_input).shape == (2, 2)


def test_lstm_classifier_rank_fields_default_to_plain_layers() -> None:
    plain = LSTMClassifier(64, 3)
    assert isinstance(plain.embedding, nn.Embedding) and isinstance(plain.fc, nn.Linear)
