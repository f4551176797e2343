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
