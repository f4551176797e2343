"""The preprocessing a compact file carries, applied with numpy: tokenizer for text, scaling for images.

These are the functions training used (modelshrink.data.text imports `words` from here), so a
sentence becomes the same token ids in the runtime as in the run that measured the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelshrink.runtime.errors import ArtifactError

PAD, OOV = 0, 1  # reserved token ids: padding, out-of-vocabulary
# The characters Keras' Tokenizer drops by default (the thesis used it); apostrophes stay.
KERAS_FILTERS = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~\t\n]")


def words(text: str) -> list[str]:
    """Lower-cased words, split as Keras' Tokenizer does."""
    return KERAS_FILTERS.sub(" ", text.lower()).split()


def encode_ids(texts: Sequence[str], index: dict[str, int], max_len: int) -> np.ndarray:
    """(N, max_len) int64 ids, pre-padded with 0 and pre-truncated (keep the last tokens)."""
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(w, OOV) for w in words(text)][-max_len:]
        if ids:
            out[row, max_len - len(ids) :] = ids
    return out


def encode_hf(tok: Any, texts: Sequence[str], max_len: int, pad_id: int) -> np.ndarray:
    """(N, max_len) int64 ids of a Hugging Face fast tokenizer (`tokenizers.Tokenizer`, truncating at
    max_len, no padding), pre-padded with 0; where the padding id is not 0, it and 0 swap places (an
    involution the exported model's wrapper undoes). Training and the runtime both encode here."""
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for row, enc in enumerate(tok.encode_batch(list(texts))):
        ids = np.asarray(enc.ids[:max_len], dtype=np.int64)
        if pad_id:
            ids = np.where(ids == 0, pad_id, np.where(ids == pad_id, 0, ids))
        if len(ids):
            out[row, max_len - len(ids) :] = ids
    return out


def hf_tokenizer(tokenizer_json: str, max_len: int) -> Any:
    """A `tokenizers.Tokenizer` from its JSON text, truncating at max_len (first tokens kept), unpadded."""
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise ArtifactError(
            "this file's model reads text through a Hugging Face tokenizer: pip install tokenizers "
            "(or modelshrink-runtime[hf])"
        ) from err
    try:
        tok = Tokenizer.from_str(tokenizer_json)
    except Exception as err:  # the Rust parser's error types are not exported
        raise ArtifactError(f"the file's tokenizer.json does not load ({err})") from err
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


class Preprocess:
    """Raw inputs → the model's input array, from the file's `preprocessing` metadata."""

    def __init__(self, pre: Any, where: str) -> None:
        if not isinstance(pre, dict) or pre.get("kind") not in ("text", "image"):
            kind = pre.get("kind") if isinstance(pre, dict) else None
            raise ArtifactError(f"{where} has no usable preprocessing settings (kind {kind!r}; expected text or image)")
        self.kind: str = pre["kind"]
        try:
            self.labels = [str(x) for x in pre["labels"]]
            self.hf: Any = None
            if self.kind == "text" and "hf_tokenizer" in pre:
                hf = pre["hf_tokenizer"]
                self.max_len, self.pad_id = int(hf["max_len"]), int(hf["pad_id"])
                self.hf = hf_tokenizer(str(hf["tokenizer_json"]), self.max_len)
            elif self.kind == "text":
                tok = pre["tokenizer"]
                self.max_len = int(tok["max_len"])
                self.index = {str(w): i + 2 for i, w in enumerate(tok["vocab"])}
            else:
                self.scale = float(pre.get("scale", 1.0))
                self.mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1) if "mean" in pre else None
                self.std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1) if "std" in pre else None
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{where} has unusable preprocessing settings ({type(err).__name__}: {err})") from err

    def __call__(self, inputs: Sequence[str] | np.ndarray) -> np.ndarray:
        if self.kind == "text":
            if isinstance(inputs, str) or not all(isinstance(t, str) for t in inputs):
                raise ArtifactError("a text model classifies a list of strings; pass ['a sentence', ...]")
            if self.hf is not None:
                return encode_hf(self.hf, list(inputs), self.max_len, self.pad_id)
            return encode_ids(list(inputs), self.index, self.max_len)
        # Raw pixels (N, C, H, W) as the task read them: scaled, then standardized per channel.
        x = np.asarray(inputs, dtype=np.float32) * np.float32(self.scale)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x.astype(np.float32, copy=False)
