"""prune.nm (N:M pattern, verified, kept through fine-tuning) and prune.random (the baseline criterion)."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from modelshrink.data.synthetic import tiny_batches, tiny_fine_tune
from modelshrink.models import LSTMClassifier, TinyCNN
from modelshrink.techniques.base import RunContext
from modelshrink.techniques.properties import NM, Sparsity
from modelshrink.techniques.prune_magnitude import MagnitudePruneConfig, prune_magnitude
from modelshrink.techniques.prune_nm import NMPruneConfig, nm_mask, nm_pattern_holds, prune_nm
from modelshrink.techniques.prune_random import RandomPruneConfig, prune_random


def tiny_ctx(kind: str, seed: int = 0) -> RunContext:
    """Adam + cross-entropy over 4 random batches per epoch, on_step after each step."""
    batches = tiny_batches(kind, 4)

    fine_tune = tiny_fine_tune(batches)

    return RunContext(example_input=batches[0][0], seed=seed, steps_per_epoch=4, fine_tune=fine_tune)


def lstm(embed: int = 8) -> LSTMClassifier:
    torch.manual_seed(0)
    return LSTMClassifier(50, 3, embed_dim=embed, hidden=8, dropout=0.0).eval()


def test_2_4_pattern_on_lstm_survives_fine_tuning() -> None:
    model = lstm()
    res = prune_nm(copy.deepcopy(model), NMPruneConfig(epochs=2), tiny_ctx("lstm"))
    names = {"embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc.weight"}
    assert set(res.details["pattern_verified"]) == names and all(res.details["pattern_verified"].values())
    assert res.properties[0] == NM(tuple(sorted(names)), 2, 4)  # what later steps and the files must keep
    assert isinstance(res.properties[1], Sparsity) and res.properties[1].min >= 0.5
    params = dict(res.model.named_parameters())
    for name in names:
        assert nm_pattern_holds(params[name], 2, 4)
        assert 0.5 <= res.details["sparsity"][name] <= 0.52  # the embedding's padding row is all zero
        # each group of 4 along the input dimension keeps exactly 2
        groups = params[name].detach().reshape(-1, 4)
        assert ((groups != 0).sum(1) <= 2).all()
    assert not torch.equal(params["fc.weight"], nm_mask(model.fc.weight, 2, 4) * model.fc.weight)  # it trained


def test_nm_keeps_the_largest_and_the_check_can_fail() -> None:
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 0.0, -0.2, 4.0]])
    mask = nm_mask(w, 2, 4)
    assert mask.tolist() == [[False, True, True, False, True, False, False, True]]
    assert not nm_pattern_holds(w, 2, 4)  # dense: 3 and 3 nonzeros per group
    assert nm_pattern_holds(w * mask, 2, 4)
    assert not nm_pattern_holds(torch.ones(2, 6), 2, 4)  # 6 is not a multiple of 4


def test_conv_groups_run_along_input_channels() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 8, 2, 2)  # (out, in, kh, kw)
    pruned = w * nm_mask(w, 1, 4)
    per_group = (pruned.permute(0, 2, 3, 1).reshape(-1, 2, 4) != 0).sum(-1)  # groups of 4 input channels
    assert (per_group == 1).all()


def test_dimensions_not_divisible_by_m_are_skipped_with_reason() -> None:
    res = prune_nm(lstm(embed=6), NMPruneConfig(epochs=0), tiny_ctx("lstm"))
    reasons = {s.name: s.reason for s in res.skipped}
    assert "multiple of m=4" in reasons["embedding.weight"] and "multiple of m=4" in reasons["lstm.weight_ih_l0"]
    assert "lstm.weight_hh_l0" in res.details["pattern_verified"]
    cnn = TinyCNN(num_labels=3, channels=4)  # conv1 has 1 input channel: skipped
    res = prune_nm(cnn, NMPruneConfig(epochs=0), tiny_ctx("cnn"))
    assert "conv1.weight" in {s.name for s in res.skipped} and res.details["pattern_verified"]["conv2.weight"]


@pytest.mark.parametrize(("n", "m", "match"), [(5, 4, "smaller than m"), (4, 4, "smaller than m"), (0, 4, "n \\(0\\)")])
def test_bad_n_m_are_clear_errors(n: int, m: int, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        NMPruneConfig(n=n, m=m)


def test_random_pruning_reaches_the_sparsity_with_masks_unlike_magnitude() -> None:
    model = lstm()
    cfg = RandomPruneConfig(final_sparsity=0.5, schedule="constant", epochs=1)
    res = prune_random(copy.deepcopy(model), cfg, tiny_ctx("lstm"))
    mag = prune_magnitude(copy.deepcopy(model), MagnitudePruneConfig(final_sparsity=0.5, schedule="constant",
                                                                      epochs=1), tiny_ctx("lstm"))  # fmt: skip
    assert res.details["overall_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert res.properties == [Sparsity(tuple(sorted(res.details["sparsity"])), res.details["overall_sparsity"])]
    w_rand, w_mag = res.model.lstm.weight_hh_l0, mag.model.lstm.weight_hh_l0
    assert not torch.equal(w_rand == 0, w_mag == 0)
    # random pruning removes large weights too; magnitude never drops a weight larger than one it keeps
    orig = model.lstm.weight_hh_l0.detach().abs()
    assert orig[w_rand == 0].max() > orig[w_rand != 0].median()
    # same seed, same masks; another seed, other masks
    again = prune_random(copy.deepcopy(model), cfg, tiny_ctx("lstm"))
    other = prune_random(copy.deepcopy(model), cfg, tiny_ctx("lstm", seed=1))
    assert torch.equal(again.model.lstm.weight_hh_l0 == 0, w_rand == 0)
    assert not torch.equal(other.model.lstm.weight_hh_l0 == 0, w_rand == 0)
    assert RandomPruneConfig().kind == "prune.random"
