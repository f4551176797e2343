import numpy as np

from modelshrink.measure.accuracy import eval_batches, predict_logits


def test_each_row_is_evaluated_as_if_alone_and_unpadded() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((200, 12), dtype=np.int64)
    for i, n in enumerate(rng.integers(1, 13, 200)):
        x[i, 12 - n :] = rng.integers(1, 50, n)

    def predict(xb: np.ndarray) -> np.ndarray:
        assert (xb != 0).all(), "a batch must carry no padding"
        # Depends on the length and the content, as a recurrent model would.
        return np.stack([xb.sum(axis=1) * 1.0, xb.shape[1] * np.ones(len(xb))], axis=1)

    for batch_size in (1, 7, 256):
        out = predict_logits(predict, x, batch_size)
        assert (out[:, 0] == x.sum(axis=1)).all()
        assert (out[:, 1] == (x != 0).sum(axis=1)).all()
    rows = np.concatenate(list(eval_batches(x, 7)))
    assert sorted(rows.tolist()) == list(range(200))
