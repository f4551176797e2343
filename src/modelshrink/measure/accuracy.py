"""Predictions and classification metrics, the same way for a torch model and an ONNX file."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

# A predictor maps one input batch (numpy) to logits (B, labels).
Predictor = Callable[[np.ndarray], np.ndarray]


def sequence_lengths(x: np.ndarray) -> np.ndarray:
    """Real tokens per pre-padded row (at least 1, so an empty row still runs one step)."""
    nonzero = x != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), x.shape[1] - 1)
    return x.shape[1] - first


def trimmed(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of a token batch without the leading columns that are padding in every row.

    Dropping all-padding columns is what makes an epoch fast (a sentence has 19 words on
    average, the padded length is 66); rows shorter than the batch's longest keep their padding.
    """
    xb = x[rows]
    if xb.ndim != 2 or not np.issubdtype(xb.dtype, np.integer):
        return xb
    longest = int(sequence_lengths(xb).max())
    return xb[:, xb.shape[1] - longest :]


def eval_batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices in batches. Token rows are batched only with rows of the same length.

    With `trimmed`, every sentence is then evaluated exactly as it would be alone and
    unpadded (as an app classifies one sentence): the result does not depend on which rows
    share a batch or on the batch size.
    """
    if not (x.ndim == 2 and np.issubdtype(x.dtype, np.integer)):
        for start in range(0, len(x), batch_size):
            yield np.arange(start, min(start + batch_size, len(x)))
        return
    lengths = sequence_lengths(x)
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1  # where the length changes
    for group in np.split(order, bounds):
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]


def predict_logits(predict: Predictor, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for every row of `x`, in the original row order."""
    out: np.ndarray | None = None
    for rows in eval_batches(x, batch_size):
        logits = predict(trimmed(x, rows))
        if out is None:
            out = np.empty((len(x), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    if out is None:
        raise ValueError("predict_logits needs at least one row")
    return out


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, num_labels: int) -> dict[str, object]:
    """accuracy, macro_f1 and the confusion matrix (rows: true label, columns: predicted)."""
    y_pred = logits.argmax(axis=1)
    labels = list(range(num_labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
