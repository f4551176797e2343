"""prune.movement (Sanh et al. 2020): scores, masks, returning weights, and the technique on a real loop."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from modelshrink.data.synthetic import tiny_batches, tiny_fine_tune
from modelshrink.models import LSTMClassifier
from modelshrink.techniques._targets import prunable_weights
from modelshrink.techniques.base import RunContext
from modelshrink.techniques.prune_movement import MovementPruneConfig, _MovementPruner, prune_movement


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_scores_accumulate_minus_gradient_times_weight_and_rank_by_movement() -> None:
    model = _mlp()
    targets, _ = prunable_weights(model)
    cfg = MovementPruneConfig(final_sparsity=0.5, end_step=10, frequency=1)
    pruner = _MovementPruner(targets, cfg)
    expected = {t.qualified_name: torch.zeros_like(t.weight) for t in targets}
    torch.manual_seed(1)
    for _ in range(3):  # three backward passes, weights moved by hand in between
        x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for t in targets:
                expected[t.qualified_name] -= t.weight.grad * t.weight
                t.weight.sub_(0.1 * t.weight.grad)
    for t in targets:
        torch.testing.assert_close(pruner.scores(t), expected[t.qualified_name])
    pruner.update_masks(0.5)
    for t in targets:  # per matrix: the half with the highest movement scores stays
        s = expected[t.qualified_name].reshape(-1)
        kept = pruner.masks[t.qualified_name].reshape(-1)
        assert int(kept.sum()) == s.numel() - round(0.5 * s.numel())
        assert s[kept].min() >= s[~kept].max()
    pruner.close()
    model.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(2, 6)), torch.tensor([0, 1])).backward()
    torch.testing.assert_close(pruner.scores(targets[0]), expected[targets[0].qualified_name])  # hooks removed


def test_a_masked_weight_keeps_its_value_and_returns_with_it() -> None:
    model = _mlp()
    targets, _ = prunable_weights(model)
    pruner = _MovementPruner(targets, MovementPruneConfig(final_sparsity=0.5, end_step=10, frequency=1))
    first = targets[0]
    name = first.qualified_name
    value = first.weight.detach().clone()
    pruner.movement[name] = torch.arange(value.numel(), dtype=torch.float32).view_as(value)  # low index: low score
    pruner.update_masks(0.5)
    pruner.apply_masks()
    gone = ~pruner.masks[name]
    assert (first.weight[gone] == 0).all()
    pruner.movement[name] = -pruner.movement[name]  # the ranking turns over: the masked half returns
    pruner.update_masks(0.5)
    pruner.apply_masks()
    torch.testing.assert_close(first.weight.detach()[gone], value[gone])  # with the values it had
    assert (first.weight[~gone] == 0).all()
    pruner.close()


def test_movement_pruning_on_a_fine_tuning_loop_skips_embeddings_and_head() -> None:
    batches = tiny_batches("lstm", 4)
    ctx = RunContext(example_input=batches[0][0], seed=0, steps_per_epoch=4, num_labels=3,
                     fine_tune=tiny_fine_tune(batches, lr=1e-2))  # fmt: skip
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=50, num_labels=3, embed_dim=8, hidden=8)
    cfg = MovementPruneConfig(final_sparsity=0.7, begin_step=1, end_step=6, frequency=1, epochs=2)
    res = prune_movement(model, cfg, ctx)
    skipped = {s.name for s in res.skipped}
    assert {"embedding.weight", "fc.weight"} <= skipped  # the paper prunes the encoder's matrices only
    assert set(res.details["sparsity"]) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0"}
    assert all(s == pytest.approx(0.7, abs=0.01) for s in res.details["sparsity"].values())
    assert res.details["schedule_completed"] and res.details["steps"] == 8
    assert (model.embedding.weight[1:] != 0).all() and not any(p._backward_hooks for p in model.parameters())
    x = batches[0][0]
    assert model(x).shape == (len(x), 3)


def test_config_refuses_what_movement_cannot_rank() -> None:
    with pytest.raises(ValidationError, match="needs the gradual schedule"):
        MovementPruneConfig(schedule="constant")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        MovementPruneConfig(epochs=0)
