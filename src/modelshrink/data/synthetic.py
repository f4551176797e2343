"""Small made-up data sets for the tests: learnable, fast, no files needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelshrink.data.tasks import TaskData
from modelshrink.data.text import Tokenizer

# Each class has its own keywords; a sentence mixes its class's words with shared filler.
_KEYWORDS = {
    "joy": ["happy", "glad", "delighted", "cheerful"],
    "anger": ["furious", "angry", "mad", "annoyed"],
    "fear": ["scared", "afraid", "nervous", "terrified"],
}
_FILLER = ["i", "feel", "so", "today", "really", "the", "and", "was", "a", "bit"]


def synthetic_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    names = sorted(_KEYWORDS)
    texts, labels = [], []
    for _ in range(n):
        label = names[rng.integers(len(names))]
        length = int(rng.integers(3, 12))
        tokens = [str(rng.choice(_FILLER)) for _ in range(length)]
        tokens.insert(int(rng.integers(len(tokens) + 1)), str(rng.choice(_KEYWORDS[label])))
        texts.append(" ".join(tokens))
        labels.append(label)
    return texts, labels


def synthetic_text_task(n: int = 300, seed: int = 0, vocab_size: int = 64, max_len: int = 16) -> TaskData:
    texts, labels = synthetic_texts(n, seed)
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels], dtype=np.int64)
    a, b = int(n * 0.7), int(n * 0.85)
    tok = Tokenizer(vocab_size, max_len).fit(texts[:a])
    x = tok.encode(texts)
    return TaskData(
        x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], labels=names, input_dim=vocab_size, kind="text",
        source="synthetic", preprocessing={"kind": "text", "labels": names, "tokenizer": tok.to_dict()},
    )  # fmt: skip


def write_synthetic_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """A `text,label` CSV of `synthetic_texts`, for CLI and runner tests."""
    texts, labels = synthetic_texts(n, seed)
    path.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in zip(texts, labels, strict=True)))
    return path


def tiny_batches(kind: str, steps: int, vocab_size: int = 50, num_labels: int = 3) -> list[tuple[Any, Any]]:
    """`steps` random (x, y) batches of 8 for a tiny "lstm" (token ids) or "cnn" (8x8 images)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        if kind == "lstm":
            x = torch.randint(1, vocab_size, (8, 6), generator=gen)  # (B, T) token ids
        else:
            x = torch.randn(8, 1, 8, 8, generator=gen)  # (B, 1, H, W)
        out.append((x, torch.randint(0, num_labels, (8,), generator=gen)))
    return out


def tiny_fine_tune(batches: list[tuple[Any, Any]], lr: float = 1e-2, after_step: Any = None) -> Any:
    """A `RunContext.fine_tune` over fixed `batches` for tests: Adam + cross-entropy, `on_step`
    (and `after_step(model, step)`, for recording) after every optimizer step."""
    import torch
    import torch.nn.functional as F

    def fine_tune(model: Any, epochs: int, on_step: Any = None, params: Any = None) -> None:
        opt = torch.optim.Adam(list(params) if params is not None else list(model.parameters()), lr=lr)
        model.train()
        step = 0
        for _ in range(epochs):
            for x, y in batches:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
                step += 1
                if on_step is not None:
                    on_step(step)
                if after_step is not None:
                    after_step(model, step)
        model.eval()

    return fine_tune


def synthetic_image_task(n: int = 96) -> TaskData:
    """Random 1×8×8 images labelled by brightness (2 labels), split 64/16/16 for n=96."""
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    a, b = n * 2 // 3, n * 5 // 6
    return TaskData(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], labels=["lo", "hi"], input_dim=1,
                    kind="image", source="test")  # fmt: skip


def tiny_hf_folder(dest: Path, id2label: list[str] | None = None, layers: int = 2, seed: int = 0) -> Path:
    """A tiny BERT (hidden 32, `layers` layers, 2 heads) with a WordPiece tokenizer trained on
    `synthetic_texts`, saved like a Hugging Face folder. `id2label`: a sequence-classification head
    for these names; None: an encoder-only folder (BertModel, no head). Needs the `hf` extra."""
    import torch
    from tokenizers import Tokenizer as FastTokenizer
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = FastTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        synthetic_texts(200, seed)[0], trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    labels = (
        {"id2label": dict(enumerate(id2label)), "label2id": {n: i for i, n in enumerate(id2label)}} if id2label else {}
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if id2label else BertModel(config)
    model.save_pretrained(dest)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")  # fmt: skip
    fast.save_pretrained(dest)
    return dest
