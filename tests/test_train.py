import numpy as np
import pytest
import torch

from modelshrink.data.synthetic import synthetic_text_task
from modelshrink.models import LSTMClassifier
from modelshrink.train import TrainConfig, evaluate, fit, set_seed, train_batches


def _fit(seed: int, cfg: TrainConfig) -> tuple[LSTMClassifier, list[dict[str, float]]]:
    data = synthetic_text_task(200)
    set_seed(seed)
    model = LSTMClassifier(data.input_dim, data.num_labels, embed_dim=8, hidden=8)
    return model, fit(model, data, cfg, seed)


def test_same_seed_same_numbers() -> None:
    cfg = TrainConfig(epochs=2, batch_size=16, threads=1)
    (a, ha), (b, hb), (c, _) = _fit(3, cfg), _fit(3, cfg), _fit(4, cfg)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert [h["val_loss"] for h in ha] == [h["val_loss"] for h in hb]
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_early_stopping_restores_the_best_weights() -> None:
    # A large learning rate makes the validation loss bounce, so stopping and restoring matter.
    cfg = TrainConfig(epochs=30, batch_size=16, lr=0.05, patience=2, threads=1)
    model, history = _fit(0, cfg)
    data = synthetic_text_task(200)
    best = min(h["val_loss"] for h in history)
    assert len(history) < 30  # it stopped early
    assert evaluate(model, data.x_val, data.y_val, data.num_labels)["loss"] == pytest.approx(best, rel=1e-5)
    assert history[-1]["val_loss"] > best  # the last epoch was worse: the restore changed something


def test_batches_cover_every_row_once_and_group_lengths() -> None:
    x = np.zeros((1000, 20), dtype=np.int64)
    lengths = np.random.default_rng(0).integers(1, 21, 1000)
    for i, n in enumerate(lengths):
        x[i, 20 - n :] = 5
    batches = list(train_batches(x, 32, np.random.default_rng(1)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    # Bucketing: the spread of lengths inside a batch is far below the spread overall.
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 5


# -- the recipe's options (issue 19): each off by default, each changes what it says ------------------
def test_new_options_at_their_defaults_keep_old_hashes() -> None:
    from modelshrink.store import config_key

    dump = TrainConfig().model_dump(mode="json")
    assert dump == {"epochs": 50, "batch_size": 32, "lr": 1e-3, "patience": 5, "threads": 2}
    assert config_key(dump) == "3622ce74bda3d147"  # the hash on main before these options existed


def test_monitor_val_accuracy_restores_the_best_accuracy() -> None:
    cfg = TrainConfig(epochs=30, batch_size=16, lr=0.05, patience=3, threads=1, monitor="val_accuracy")
    model, history = _fit(0, cfg)
    data = synthetic_text_task(200)
    best = max(h["val_accuracy"] for h in history)
    assert evaluate(model, data.x_val, data.y_val, data.num_labels)["accuracy"] == pytest.approx(best)
    # It stopped `patience` epochs after the first epoch that reached the best accuracy.
    first_best = next(h["epoch"] for h in history if h["val_accuracy"] >= best - 1e-4)
    assert len(history) == min(30, first_best + 3)


def test_lr_decay_halves_the_rate_when_the_monitor_stalls() -> None:
    cfg = TrainConfig(
        epochs=12,
        batch_size=16,
        lr=0.05,
        patience=12,
        threads=1,
        lr_decay=0.5,
        lr_decay_patience=1,
        monitor="val_accuracy",
    )
    _, history = _fit(0, cfg)
    rates = [h["lr"] for h in history]
    assert rates[0] == 0.05 and rates[-1] < 0.05
    assert all(any(r == pytest.approx(0.05 * 0.5**k) for k in range(12)) for r in rates)
    assert rates == sorted(rates, reverse=True)
    # lr_decay_patience=1: every epoch that did not beat the best accuracy so far halves the rate for the next.
    best = 0.0
    for h, next_rate in zip(history, rates[1:], strict=False):
        stalled = h["val_accuracy"] < best + 1e-4
        best = max(best, h["val_accuracy"])
        assert next_rate == pytest.approx(h["lr"] * (0.5 if stalled else 1.0))


def test_embed_dropout_drops_whole_channels_and_leaves_a_plain_model() -> None:
    from modelshrink.train import _spatial_dropout

    emb = torch.nn.Embedding(5, 16).train()
    out = _spatial_dropout(0.5)(emb, None, torch.ones(4, 7, 16))
    assert torch.equal(out, out[:, :1, :].expand_as(out))  # one mask per sentence and channel, all positions
    assert {0.0, 2.0} == set(out.unique().tolist())
    assert torch.equal(_spatial_dropout(0.5)(emb.eval(), None, torch.ones(4, 7, 16)), torch.ones(4, 7, 16))
    plain, _ = _fit(0, TrainConfig(epochs=2, batch_size=16, threads=1))
    dropped, _ = _fit(0, TrainConfig(epochs=2, batch_size=16, threads=1, embed_dropout=0.3))
    assert not torch.equal(plain.fc.weight, dropped.fc.weight)
    assert not dropped.embedding._forward_hooks  # the hook is gone once training ends


def test_weight_decay_shrinks_the_weights() -> None:
    plain, _ = _fit(0, TrainConfig(epochs=3, batch_size=16, lr=0.01, threads=1))
    decayed, _ = _fit(0, TrainConfig(epochs=3, batch_size=16, lr=0.01, threads=1, weight_decay=5.0))
    assert decayed.fc.weight.norm() < 0.8 * plain.fc.weight.norm()


def test_on_epoch_sees_each_epoch_and_may_add_figures() -> None:
    seen: list[int] = []

    def record(model: torch.nn.Module, entry: dict[str, float]) -> None:
        seen.append(int(entry["epoch"]))
        entry["extra"] = 1.0

    data = synthetic_text_task(200)
    set_seed(0)
    model = LSTMClassifier(data.input_dim, data.num_labels, embed_dim=8, hidden=8)
    history = fit(model, data, TrainConfig(epochs=2, batch_size=16, threads=1), 0, on_epoch=record)
    assert seen == [1, 2] and all(h["extra"] == 1.0 for h in history)


def test_a_worker_trains_with_at_most_its_share_of_the_threads() -> None:
    # --jobs workers cap train.threads (more would oversubscribe the cores); the config itself is untouched.
    import torch

    from modelshrink.train import cap_threads, training_threads

    cfg = TrainConfig(threads=2)
    saved = torch.get_num_threads()
    try:
        assert training_threads(cfg) == 2
        cap_threads(1)
        assert training_threads(cfg) == 1 and cfg.threads == 2
        assert training_threads(TrainConfig(threads=1)) == 1
        cap_threads(4)
        assert training_threads(cfg) == 2  # a cap never raises the config's threads
    finally:
        cap_threads(None)
        torch.set_num_threads(saved)
    assert training_threads(cfg) == 2


def test_flush_denormal_holds_during_training_only() -> None:
    import torch

    from modelshrink.train import fine_tune

    data = synthetic_text_task(120)
    model = LSTMClassifier(data.input_dim, data.num_labels, embed_dim=8, hidden=8)
    tiny = torch.tensor([1e-40])  # a denormal float32
    seen: list[bool] = []
    on_step = lambda _s: seen.append(bool((tiny * 1.0).item() == 0.0))  # noqa: E731
    fine_tune(model, data, TrainConfig(flush_denormal=True), 0, 1, on_step)
    assert seen and all(seen)  # flushed to zero in every training step
    assert (tiny * 1.0).item() != 0.0  # and kept again afterwards: files are measured as a user runs them
    seen.clear()
    fine_tune(model, data, TrainConfig(), 0, 1, on_step)
    assert seen and not any(seen)  # off by default
