"""Read a text-classification CSV, split it, and turn text into padded token ids."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from modelshrink.errors import DataError

# Word splitting and id encoding are the torch-free runtime's, so a compact file tokenizes there as here.
from modelshrink.runtime.preprocess import OOV, PAD, encode_ids, words

__all__ = ["OOV", "PAD", "Tokenizer", "read_text_csv", "split_indices", "words"]

MAX_LINE_BYTES = 1 << 20  # a longer CSV line is not one text: refused before pandas reads it

log = logging.getLogger(__name__)


def read_text_csv(path: Path, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list[str]]:
    """Return (texts, labels) from a CSV; rows with empty text or label are dropped with a warning.

    UTF-8 first, Latin-1 as a fallback. Extra columns are ignored.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data path {str(path)!r} is a folder; pass a CSV file with --data")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; pass an existing CSV with --data")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {str(path)!r} is empty; it needs a header row and data rows")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"data file {str(path)!r} is UTF-16 text; save it as UTF-8 and pass that file")
    if b"\x00" in raw[:65536]:
        raise DataError(f"data file {str(path)!r} looks binary (it contains NUL bytes); pass a text CSV")
    longest = max(len(line) for line in raw.split(b"\n", 1 << 20))
    if longest > MAX_LINE_BYTES:
        raise DataError(f"data file {str(path)!r} has a line longer than {MAX_LINE_BYTES:,} bytes ({longest:,}); "
                        "split it into rows of one text each")  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never fails: every byte is a Latin-1 character
        log.warning("%s is not valid UTF-8; read it as Latin-1", path)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"data file {str(path)!r} is not a readable CSV ({str(err).strip()}); check that every "
                        "quote is closed and every row has the header's columns") from err  # fmt: skip
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        have = ", ".join(repr(c) for c in df.columns)
        raise DataError(
            f"data file {str(path)!r} has no column {missing[0]!r}; its columns are {have}; "
            "choose them with --text-column and --label-column"
        )
    texts = df[text_column].str.strip()
    labels = df[label_column].str.strip()
    keep = (texts != "") & (labels != "")
    if not keep.any():
        raise DataError(f"data file {str(path)!r} has no data rows with both a text and a label (all {len(df)} empty); "
                        f"add rows, or choose the columns with --text-column and --label-column")  # fmt: skip
    _check_labels(path, labels[keep].tolist())
    dropped = int((~keep).sum())
    if dropped:
        log.warning("dropped %d of %d rows with an empty text or label in %s", dropped, len(df), path)
    return texts[keep].tolist(), labels[keep].tolist()


def _check_labels(path: Path, labels: list[str]) -> None:
    """Refuse a label column that cannot be classes: real numbers, or nearly one class per row."""
    distinct = set(labels)
    try:
        numbers = [float(x) for x in distinct]
    except ValueError:
        numbers = []
    if numbers and any(not v.is_integer() for v in numbers):
        raise DataError(f"label column of {str(path)!r} holds floats (e.g. {sorted(distinct)[0]!r}), not classes; "
                        "classification needs class labels: choose the right one with --label-column")  # fmt: skip
    if len(distinct) > max(2, len(labels) // 2):
        raise DataError(f"label column of {str(path)!r} has {len(distinct)} classes for {len(labels)} rows; most "
                        "labels occur once: check that --label-column names the class label")  # fmt: skip


def split_indices(
    labels: Sequence[str],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    stratify: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/validation/test row indices (70/15/15 with seed 42 by default, as the thesis)."""
    n = len(labels)
    n_classes = len(set(labels))
    if n_classes < 2:
        only = f" ({labels[0]!r})" if n else ""
        raise DataError(f"the data has {n_classes} class{only}; classification needs at least 2 distinct labels")
    train_f, val_f, test_f = fractions
    n_test = int(round(n * test_f))
    n_val = int(round(n * val_f))
    n_train = n - n_test - n_val
    # Stratifying needs each split to hold at least one row of every class.
    need = n_classes if stratify else 1
    if min(n_train, n_val, n_test) < need:
        raise DataError(
            f"{n} rows are too few for a {train_f:.0%}/{val_f:.0%}/{test_f:.0%} split"
            f"{' stratified over ' + str(n_classes) + ' classes' if stratify else ''}: "
            f"it would give {n_train}/{n_val}/{n_test} rows; supply more rows"
        )
    idx = np.arange(n)
    y = np.asarray(labels)
    try:
        rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=y if stratify else None)
        train, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=y[rest] if stratify else None)
    except ValueError as err:  # scikit-learn: a class with too few members to stratify
        raise DataError(f"cannot stratify this data: {err}; drop --stratify or supply more rows") from err
    return train, val, test


@dataclass
class Tokenizer:
    """Word-level tokenizer: 0 is padding, 1 out-of-vocabulary, then words by frequency.

    `vocab_size` counts every id (pad and OOV included), so it is the embedding's row count.
    Sequences are pre-padded and pre-truncated to `max_len` (keep the last tokens), as Keras'
    `pad_sequences` defaults, which the thesis used.
    """

    vocab_size: int = 10_000
    max_len: int = 66
    vocab: tuple[str, ...] = ()  # the word of id i+2 is vocab[i]

    def fit(self, texts: Sequence[str]) -> Tokenizer:
        """Learn the vocabulary from `texts`; call it with the training split only (no leak)."""
        counts = Counter(w for t in texts for w in words(t))
        # most_common breaks ties by first appearance: deterministic for a given split.
        self.vocab = tuple(w for w, _ in counts.most_common(self.vocab_size - 2))
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, max_len) int64 ids, pre-padded with 0 and pre-truncated."""
        return encode_ids(texts, {w: i + 2 for i, w in enumerate(self.vocab)}, self.max_len)

    def to_dict(self) -> dict[str, object]:
        return {
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "padding": "pre",
            "truncating": "pre",
            "lowercase": True,
            "pad_id": PAD,
            "oov_id": OOV,
            "vocab": list(self.vocab),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        vocab = d.get("vocab")
        if not isinstance(vocab, list):
            raise DataError("preprocessing file has no 'vocab' list; re-save the model with modelshrink")
        return cls(vocab_size=int(d["vocab_size"]), max_len=int(d["max_len"]), vocab=tuple(vocab))
