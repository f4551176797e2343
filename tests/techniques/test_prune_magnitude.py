"""prune.magnitude and the shared target finder, on tiny models with a real fine-tuning loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from modelshrink.data.synthetic import tiny_batches, tiny_fine_tune
from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models import LSTMClassifier, TinyCNN
from modelshrink.techniques import get_technique
from modelshrink.techniques._targets import prunable_weights
from modelshrink.techniques.base import RunContext
from modelshrink.techniques.properties import Sparsity
from modelshrink.techniques.prune_magnitude import (
    MagnitudePruneConfig,
    polynomial_sparsity,
    prune_magnitude,
    should_update_masks,
)

STEPS_PER_EPOCH = 4
Recorder = Callable[[nn.Module, int], None]


def _batches(kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return tiny_batches(kind, STEPS_PER_EPOCH)


def make_ctx(kind: str, after_step: Recorder | None = None, exclude: tuple[str, ...] = ()) -> RunContext:
    """A RunContext whose fine_tune is a real loop: Adam, cross-entropy, on_step after every step."""
    batches = _batches(kind)

    fine_tune = tiny_fine_tune(batches, lr=1e-3, after_step=after_step)

    return RunContext(
        example_input=batches[0][0], seed=0, steps_per_epoch=STEPS_PER_EPOCH, fine_tune=fine_tune, exclude=exclude
    )


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "lstm":
        return LSTMClassifier(vocab_size=50, num_labels=3, embed_dim=8, hidden=8)
    return TinyCNN(num_labels=3, channels=4)


def target_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    targets, _ = prunable_weights(model)
    return {t.qualified_name: t.weight for t in targets}


def zero_count(w: torch.Tensor) -> int:
    return int((w == 0).sum())


# --- targets ---------------------------------------------------------------------------------


def test_targets_cover_every_rnn_weight_but_no_bias() -> None:
    model = nn.Sequential(
        nn.LSTM(4, 3, num_layers=2, bidirectional=True), nn.GRU(6, 2), nn.Conv1d(2, 2, 3), nn.Embedding(5, 2)
    )
    names = list(target_weights(model))
    lstm = [f"0.weight_{kind}_l{layer}{rev}" for layer in (0, 1) for rev in ("", "_reverse") for kind in ("ih", "hh")]
    assert names == lstm + ["1.weight_ih_l0", "1.weight_hh_l0", "2.weight", "3.weight"]


def test_model_without_supported_layer_is_incompatible() -> None:
    with pytest.raises(IncompatibleModelError, match="LayerNorm") as err:
        prunable_weights(nn.Sequential(nn.LayerNorm(4)))
    assert "Linear" in str(err.value)  # the message lists what is supported


def test_unknown_exclude_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="fcc"):
        prunable_weights(make_model("cnn"), exclude=("fcc",))


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"final_sparsity": 1.0}, "input_value=1.0"),
        ({"final_sparsity": -0.1}, "input_value=-0.1"),
        ({"initial_sparsity": 1.0}, "input_value=1.0"),
        ({"begin_step": 10, "end_step": 10}, r"end_step \(10\) must be greater than begin_step \(10\)"),
        ({"begin_step": 20, "end_step": 10}, r"end_step \(10\)"),
        ({"initial_sparsity": 0.6, "final_sparsity": 0.5}, r"initial_sparsity \(0.6\)"),
        ({"frequency": 0}, "input_value=0"),
        ({"epochs": -1}, "input_value=-1"),
        ({"sparsity": 0.5}, "extra"),  # misspelt key
    ],
)
def test_bad_config_names_the_value(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        MagnitudePruneConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_and_json_round_trip() -> None:
    cfg = MagnitudePruneConfig()
    assert MagnitudePruneConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert get_technique("prune.magnitude").config_cls is MagnitudePruneConfig


# --- schedule ------------------------------------------------------------------------------------


def test_polynomial_sparsity_matches_tfmot_formula() -> None:
    cfg = MagnitudePruneConfig(initial_sparsity=0.2, final_sparsity=0.8, begin_step=10, end_step=110, power=3)
    expected = {
        0: 0.2,  # before begin_step: p clipped to 0
        10: 0.2,
        35: 0.8 + (0.2 - 0.8) * (1 - 0.25) ** 3,
        60: 0.8 + (0.2 - 0.8) * 0.5**3,
        110: 0.8,  # end_step: p = 1
        500: 0.8,  # after end_step: p clipped to 1
    }
    for step, want in expected.items():
        assert polynomial_sparsity(step, cfg) == pytest.approx(want, abs=1e-12), step


def test_mask_updates_follow_frequency_and_include_end_step() -> None:
    cfg = MagnitudePruneConfig(begin_step=3, end_step=13, frequency=5)
    assert [s for s in range(30) if should_update_masks(s, cfg)] == [3, 8, 13]
    off_turn_end = MagnitudePruneConfig(begin_step=3, end_step=12, frequency=5)
    assert [s for s in range(30) if should_update_masks(s, off_turn_end)] == [3, 8]


# --- pruning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
@pytest.mark.parametrize("sparsity", [0.3, 0.75])
def test_one_shot_per_tensor_hits_target_exactly(kind: str, sparsity: float) -> None:
    model = make_model(kind)
    x = make_ctx(kind).example_input
    shape = model(x).shape
    result = prune_magnitude(model, MagnitudePruneConfig(final_sparsity=sparsity, epochs=0), make_ctx(kind))
    for name, w in target_weights(result.model).items():
        assert abs(zero_count(w) - sparsity * w.numel()) <= 1, name
        assert result.details["sparsity"][name] == pytest.approx(zero_count(w) / w.numel())
    assert result.model(x).shape == shape
    assert result.details["schedule_completed"] is False and result.details["steps"] == 0


def test_per_tensor_prunes_the_smallest_magnitudes() -> None:
    model = make_model("cnn")
    before = {n: w.detach().clone() for n, w in target_weights(model).items()}
    prune_magnitude(model, MagnitudePruneConfig(final_sparsity=0.5, epochs=0), make_ctx("cnn"))
    for name, w in target_weights(model).items():
        pruned, kept = before[name][w == 0].abs(), before[name][w != 0].abs()
        assert pruned.max() <= kept.min(), name


def test_ties_still_give_the_exact_count() -> None:
    model = nn.Sequential(nn.Linear(10, 10))
    nn.init.constant_(model[0].weight, 1.0)  # every magnitude equal
    prune_magnitude(model, MagnitudePruneConfig(final_sparsity=0.37, epochs=0), make_ctx("cnn"))
    assert zero_count(model[0].weight) == 37


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_global_scope_uses_one_threshold(kind: str) -> None:
    model = make_model(kind)
    before = {n: w.detach().clone() for n, w in target_weights(model).items()}
    result = prune_magnitude(model, MagnitudePruneConfig(final_sparsity=0.6, scope="global", epochs=0), make_ctx(kind))
    after = target_weights(result.model)
    total = sum(w.numel() for w in after.values())
    zeros = sum(zero_count(w) for w in after.values())
    assert abs(zeros - 0.6 * total) <= 1
    assert result.details["overall_sparsity"] == pytest.approx(zeros / total)
    # It declares what later steps must keep: the measured level on exactly the pruned tensors.
    assert result.properties == [Sparsity(tuple(sorted(after)), result.details["overall_sparsity"])]
    pruned = torch.cat([before[n][w == 0].abs() for n, w in after.items()])
    kept = torch.cat([before[n][w != 0].abs() for n, w in after.items()])
    assert pruned.max() <= kept.min()


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_pruned_weights_stay_zero_while_fine_tuning(kind: str) -> None:
    # Constant schedule, masks computed once at step 0 (frequency > steps): after every later
    # optimizer step the zeros must sit exactly where they were, while the rest trains.
    zero_masks: list[dict[str, torch.Tensor]] = []
    values: list[dict[str, torch.Tensor]] = []

    def record(model: nn.Module, step: int) -> None:
        weights = target_weights(model)
        zero_masks.append({n: (w == 0).clone() for n, w in weights.items()})
        values.append({n: w.detach().clone() for n, w in weights.items()})

    model = make_model(kind)
    cfg = MagnitudePruneConfig(final_sparsity=0.5, schedule="constant", frequency=1000, epochs=2)
    result = prune_magnitude(model, cfg, make_ctx(kind, after_step=record))
    assert len(zero_masks) == 2 * STEPS_PER_EPOCH
    for name, mask in zero_masks[0].items():
        assert abs(int(mask.sum()) - 0.5 * mask.numel()) <= 1, name
        for later in zero_masks[1:]:
            assert torch.equal(later[name], mask), name
        assert not torch.equal(values[0][name], values[-1][name]), f"{name} did not train"
    assert result.details["schedule_completed"] is True
    assert result.details["steps"] == 2 * STEPS_PER_EPOCH


def test_polynomial_schedule_during_fine_tuning() -> None:
    # 3 epochs x 4 steps = 12 steps; updates at 2, 4, 6, 8 (end), none after.
    cfg = MagnitudePruneConfig(
        initial_sparsity=0.1, final_sparsity=0.6, begin_step=2, end_step=8, frequency=2, power=2, epochs=3
    )
    seen: dict[int, float] = {}

    def record(model: nn.Module, step: int) -> None:
        w = model.lstm.weight_hh_l0
        seen[step] = zero_count(w) / w.numel()

    result = prune_magnitude(make_model("lstm"), cfg, make_ctx("lstm", after_step=record))
    n = make_model("lstm").lstm.weight_hh_l0.numel()
    last = 0.0
    for step in range(1, 13):
        if should_update_masks(step, cfg):
            last = polynomial_sparsity(step, cfg)
        assert abs(seen[step] * n - last * n) <= 1, (step, seen[step], last)
    assert seen[8] == pytest.approx(0.6, abs=1 / n)
    assert result.details["schedule_completed"] is True
    assert result.details["mask_updates"] == 4


def test_short_training_still_ends_at_final_sparsity_and_says_so() -> None:
    cfg = MagnitudePruneConfig(final_sparsity=0.7, end_step=1000, frequency=2, epochs=1)
    result = prune_magnitude(make_model("cnn"), cfg, make_ctx("cnn"))
    assert result.details["schedule_completed"] is False
    assert result.details["steps"] == STEPS_PER_EPOCH
    for name, w in target_weights(result.model).items():
        assert abs(zero_count(w) - 0.7 * w.numel()) <= 1, name


def test_unsupported_layer_with_params_is_reported_as_skipped() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))
    result = prune_magnitude(model, MagnitudePruneConfig(epochs=0), make_ctx("cnn"))
    assert [(s.name, s.type, s.reason) for s in result.skipped] == [("1", "BatchNorm2d", "unsupported layer type")]
    assert model[1].weight.eq(1).all()  # BatchNorm untouched
    assert result.details["sparsity"].keys() == {"0.weight", "3.weight"}


def test_excluded_layer_is_untouched_and_reported() -> None:
    model = make_model("lstm")
    before = model.fc.weight.detach().clone()
    result = prune_magnitude(model, MagnitudePruneConfig(epochs=0), make_ctx("lstm", exclude=("fc",)))
    assert torch.equal(model.fc.weight, before)
    assert [(s.name, s.reason) for s in result.skipped] == [("fc.weight", "excluded by config")]


def test_fine_tuning_without_data_is_a_config_error() -> None:
    ctx = RunContext(example_input=torch.zeros(1, 1, 8, 8))  # fine_tune=None
    with pytest.raises(ConfigError, match="epochs=0"):
        prune_magnitude(make_model("cnn"), MagnitudePruneConfig(epochs=2), ctx)


def test_result_model_is_plain() -> None:
    model = make_model("lstm")
    keys = set(model.state_dict())
    result = prune_magnitude(model, MagnitudePruneConfig(final_sparsity=0.5, end_step=4, frequency=1), make_ctx("lstm"))
    assert set(result.model.state_dict()) == keys  # no masks or `weight_orig` left behind
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in result.model.modules())
    assert isinstance(result.model.lstm.weight_ih_l0, nn.Parameter)


def test_constant_schedule_keeps_pruning_past_end_step() -> None:
    from modelshrink.techniques.prune_magnitude import should_update_masks

    cfg = MagnitudePruneConfig(schedule="constant", begin_step=0, end_step=100, frequency=50)
    assert [s for s in (0, 50, 100, 150, 5000) if should_update_masks(s, cfg)] == [0, 50, 100, 150, 5000]
    poly = MagnitudePruneConfig(schedule="polynomial", begin_step=0, end_step=100, frequency=50)
    assert [s for s in (0, 50, 100, 150, 5000) if should_update_masks(s, poly)] == [0, 50, 100]


@pytest.mark.parametrize("seed", range(6))
def test_keep_mask_drops_the_same_weights_as_a_stable_sort(seed: int) -> None:
    # Selection (kthvalue) instead of a full sort: the same mask, ties at the cut dropped by position.
    from modelshrink.techniques.prune_magnitude import _keep_mask

    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 5, (500,), generator=g).float()  # few distinct values: many ties at the cut
    values[torch.rand(500, generator=g) < 0.3] = 0.0
    for n_zero in (0, 1, 137, 250, 499):
        expected = torch.ones(500, dtype=torch.bool)
        expected[torch.argsort(values, stable=True)[:n_zero]] = False
        got = _keep_mask(values, n_zero)
        assert int((~got).sum()) == n_zero
        assert torch.equal(got, expected), n_zero


def test_zero_masked_zeroes_exactly_the_dropped_weights_in_place() -> None:
    from modelshrink.techniques._targets import zero_masked_

    w = nn.Parameter(torch.tensor([[-1.5, 2.0], [0.5, -3.0]]))
    keep = torch.tensor([[False, True], [True, False]])
    same = w
    zero_masked_([w], [keep.float()])
    assert same is w and torch.equal(w.detach(), torch.tensor([[0.0, 2.0], [0.5, 0.0]]))
    assert not torch.signbit(w.detach()[0, 0]) and not torch.signbit(w.detach()[1, 1])  # +0.0, not -0.0


def test_an_end_step_off_the_update_turns_is_named_not_blamed_on_short_training(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 8 steps; turns at 1, 4, 7 (frequency 3): end_step 6 is never a turn, so the last update (step 4) falls short.
    cfg = MagnitudePruneConfig(final_sparsity=0.6, begin_step=1, end_step=6, frequency=3, epochs=2)
    with caplog.at_level("WARNING"):
        result = prune_magnitude(make_model("lstm"), cfg, make_ctx("lstm"))
    assert result.details["schedule_completed"] is False and result.details["steps"] == 2 * STEPS_PER_EPOCH
    assert "end_step 6 is not on a mask-update turn" in caplog.text and "set end_step to 4 or 7" in caplog.text
    assert "fine-tuning ended" not in caplog.text
