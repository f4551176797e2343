"""Text through a Hugging Face fast tokenizer (tokenizer.json), as rows every text model reads.

Rows are (N, max_len) int64 ids, pre-padded with 0 like the word tokenizer's (data/text.py), so
batching, trimming and evaluation work unchanged. A tokenizer whose padding id is not 0 (RoBERTa:
`<s>` is 0, `<pad>` is 1) has the two ids swapped in the rows; `models.hf.HFClassifier` swaps them
back. Only the `tokenizers` package is needed (no torch, no transformers): the file alone encodes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelshrink.errors import ArtifactError, ConfigError
from modelshrink.runtime.preprocess import encode_hf, hf_tokenizer


@dataclass
class HFTextEncoder:
    """A fast tokenizer with its truncation length, padding id and the model's label names."""

    tokenizer_json: str  # the tokenizer.json text
    max_len: int
    pad_id: int
    labels: list[str] | None = None  # the model's id2label names when its head is kept; None: a new head
    vocab_size: int = 0  # the model's embedding rows (TaskData.input_dim)
    _tok: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self._tok = hf_tokenizer(self.tokenizer_json, self.max_len)
        except ArtifactError as err:
            raise ConfigError(f"{err}; re-save it with tokenizer.save_pretrained(...) from a fast tokenizer") from err

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, max_len) int64 ids, pre-padded with 0 (the padding id swapped with 0 where it is not 0)."""
        return encode_hf(self._tok, texts, self.max_len, self.pad_id)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "hf-tokenizers", "max_len": self.max_len, "pad_id": self.pad_id, "padding": "pre",
                "tokenizer_json": self.tokenizer_json}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HFTextEncoder:
        try:
            return cls(str(d["tokenizer_json"]), int(d["max_len"]), int(d["pad_id"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"preprocessing holds no valid Hugging Face tokenizer ({err!r})") from err


def tokenizer_pad_id(tokenizer_json: str) -> int | None:
    """The padding id a tokenizer.json names (its padding section, else a [PAD]/<pad> token); None if none."""
    doc = json.loads(tokenizer_json)
    padding = doc.get("padding") or {}
    if isinstance(padding.get("pad_id"), int) and padding.get("pad_token"):
        return int(padding["pad_id"])
    for token in doc.get("added_tokens") or []:
        if token.get("content") in ("[PAD]", "<pad>"):
            return int(token["id"])
    return None


def encoder_from_preprocessing(pre: dict[str, Any]) -> Any:
    """The text encoder a saved model's preprocessing names: its HF tokenizer, else the word tokenizer."""
    from modelshrink.data.text import Tokenizer

    if "hf_tokenizer" in pre:
        return HFTextEncoder.from_dict(pre["hf_tokenizer"])
    return Tokenizer.from_dict(pre["tokenizer"])


def tokenizer_special_ids(tokenizer_json: str) -> list[int]:
    """The ids of the tokens a tokenizer.json marks special ([PAD], [UNK], [CLS], <s>, ...), sorted."""
    doc = json.loads(tokenizer_json)
    return sorted({int(t["id"]) for t in doc.get("added_tokens") or [] if t.get("special") and "id" in t})


def tokenizer_unk_id(tokenizer_json: str) -> int | None:
    """The id a tokenizer gives an unknown piece (WordPiece/BPE/WordLevel `unk_token`, Unigram `unk_id`), or None."""
    doc = json.loads(tokenizer_json)
    model = doc.get("model") or {}
    if isinstance(model.get("unk_id"), int):  # Unigram
        return int(model["unk_id"])
    token = model.get("unk_token")
    vocab = model.get("vocab")
    if isinstance(token, str) and isinstance(vocab, dict) and isinstance(vocab.get(token), int):
        return int(vocab[token])
    for added in doc.get("added_tokens") or []:
        if added.get("content") in ("[UNK]", "<unk>", token):
            return int(added["id"])
    return None
