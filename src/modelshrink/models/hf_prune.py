"""The shapes of a structurally pruned transformer: its blocks' attention heads, FFN neurons and vocabulary.

transformers 5.x has no `prune_heads` and no `config.pruned_heads` any more, so heads are cut here by
slicing the query/key/value rows and the attention output projection's columns of a head. The
attention forwards of the families below infer the number of heads from the projections' sizes
(`view(*shape, -1, head_size)`), so a sliced layer runs unchanged; its head count is also kept in
the module's own attribute for consistency.

The rebuilt model's shapes come from its config: `intermediate_size` (or DistilBERT's `hidden_dim`)
holds the FFN width, the same in every layer; `HEADS_KEY` holds the head count of each layer, which
no transformers config field can say. `apply_saved_shapes` resizes a model built from such a config,
so a compact file (export/compact.py → build_hf) loads the pruned weights into the right shapes.

A vocabulary-pruned model keeps the tokenizer and its ids: its word embedding becomes a
`RemappedEmbedding`, an int32 `remap` buffer (old id → kept row; a dropped id → the [UNK] token's row)
in front of a smaller table, both in the state dict, so tokenizer.json, the ONNX inputs and the
torch-free runtime stay as they were. `VOCAB_KEY` holds the kept row count in the config.

Torch-Pruning is not used: its BERT support traces a forward pass and needs the head counts patched by
hand afterwards; the cut is four Linear slices per block, and loading a file must rebuild the shapes
with no tracing and no extra dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modelshrink.errors import IncompatibleModelError

HEADS_KEY = "modelshrink_heads_per_layer"  # the config key: attention heads kept in each layer, in order
VOCAB_KEY = "modelshrink_vocab_rows"  # the config key: word-embedding rows kept (config.vocab_size ids map onto them)


@dataclass
class Block:
    """One transformer layer's prunable Linear layers and the module that holds its head count."""

    attention: Any  # holds the head-count attribute (`num_attention_heads` or `n_heads`)
    heads_attr: str
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear  # the attention output projection: input (B, T, heads * head_size)
    ffn_in: nn.Linear  # hidden → intermediate
    ffn_out: nn.Linear  # intermediate → hidden
    head_size: int

    @property
    def heads(self) -> int:
        return self.q.out_features // self.head_size

    @property
    def ffn(self) -> int:
        return self.ffn_in.out_features


def _bert_block(layer: Any) -> Block:  # transformers layers: attributes typed by their classes, not nn.Module
    att = layer.attention.self  # BERT, RoBERTa, ELECTRA, MiniLM, XLM-R, CamemBERT, ...
    return Block(att, "num_attention_heads", att.query, att.key, att.value, layer.attention.output.dense,
                 layer.intermediate.dense, layer.output.dense, int(att.attention_head_size))  # fmt: skip


def _distilbert_block(layer: Any) -> Block:
    att = layer.attention
    return Block(att, "n_heads", att.q_lin, att.k_lin, att.v_lin, att.out_lin, layer.ffn.lin1, layer.ffn.lin2,
                 int(att.attention_head_size))  # fmt: skip


def encoder_layers(base: Any) -> tuple[list[Any], str]:  # noqa: ANN401  # a transformers base model
    """The encoder layers of a transformers base model and their family ("bert", "distilbert"; "" when unknown)."""
    encoder = getattr(base, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer"):
        return list(encoder.layer), "bert"
    transformer = getattr(base, "transformer", None)
    if transformer is not None and hasattr(transformer, "layer"):
        return list(transformer.layer), "distilbert"
    return [], ""


def blocks(model: nn.Module) -> list[Block]:
    """The encoder blocks of a transformers model (the `AutoModelForSequenceClassification` inside HFClassifier)."""
    base = getattr(model, "base_model", model)
    layers, family = encoder_layers(base)
    try:
        found = [(_bert_block if family == "bert" else _distilbert_block)(layer) for layer in layers]
    except AttributeError:
        found = []
    if any(isinstance(m, nn.Sequential) for b in found for m in (b.q, b.k, b.v, b.o, b.ffn_in, b.ffn_out)):
        raise IncompatibleModelError("prune.transformer: this hf model's attention or FFN layers are factored "
                                     "(lowrank); put prune.transformer before lowrank in the steps")  # fmt: skip
    if not found or not all(isinstance(m, nn.Linear) for b in found for m in (b.q, b.k, b.v, b.o, b.ffn_in, b.ffn_out)):
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise IncompatibleModelError(
            f"prune.transformer does not know the layer layout of model_type {model_type!r}; it handles "
            "BERT-style encoders (bert, roberta, electra, MiniLM, ...) and distilbert"
        )
    return found


def _slice(linear: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
    """Keep `rows` (output features) and/or `cols` (input features) of `linear`, in place."""
    with torch.no_grad():
        weight = linear.weight  # (out, in)
        if rows is not None:
            weight = weight[rows.to(weight.device)]
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias[rows.to(weight.device)].clone())
        if cols is not None:
            weight = weight[:, cols.to(weight.device)]
        linear.weight = nn.Parameter(weight.clone())
    linear.out_features, linear.in_features = linear.weight.shape


def keep_heads(block: Block, heads: torch.Tensor) -> None:
    """Keep only the attention heads `heads` (sorted indices) of `block`."""
    d = block.head_size
    rows = (heads.unsqueeze(1) * d + torch.arange(d)).reshape(-1)  # (kept * d,): each head's d rows
    for linear in (block.q, block.k, block.v):
        _slice(linear, rows, None)
    _slice(block.o, None, rows)
    setattr(block.attention, block.heads_attr, len(heads))
    if hasattr(block.attention, "all_head_size"):
        block.attention.all_head_size = len(heads) * d


def keep_ffn(block: Block, neurons: torch.Tensor) -> None:
    """Keep only the FFN intermediate neurons `neurons` (sorted indices) of `block`."""
    _slice(block.ffn_in, neurons, None)
    _slice(block.ffn_out, None, neurons)


def ffn_config_key(config: Any) -> str:
    return "hidden_dim" if getattr(config, "model_type", "") == "distilbert" else "intermediate_size"


def record_shapes(model: nn.Module) -> None:
    """Write the blocks' current head counts and FFN width into the model's config (the saved file's)."""
    found = blocks(model)
    widths = {b.ffn for b in found}
    if len(widths) != 1:  # internal invariant: the config holds one FFN width for every layer
        raise RuntimeError(f"FFN widths differ between layers: {sorted(widths)}")
    config = model.config  # type: ignore[union-attr]
    setattr(config, ffn_config_key(config), widths.pop())
    setattr(config, HEADS_KEY, [b.heads for b in found])
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    if isinstance(embedding, RemappedEmbedding):
        setattr(config, VOCAB_KEY, embedding.num_embeddings)


def apply_saved_shapes(model: nn.Module) -> None:
    """Shrink a model freshly built from a pruned config to its saved shapes (the weights come after)."""
    rows = getattr(model.config, VOCAB_KEY, None)  # type: ignore[union-attr]
    if rows:
        old = model.get_input_embeddings()  # type: ignore[operator]
        smaller = RemappedEmbedding(old.num_embeddings, int(rows), old.embedding_dim)
        model.set_input_embeddings(smaller)  # type: ignore[operator]
    counts = getattr(model.config, HEADS_KEY, None)  # type: ignore[union-attr]
    if not counts:
        return
    found = blocks(model)
    if len(counts) != len(found):
        raise IncompatibleModelError(f"config {HEADS_KEY} lists {len(counts)} layers, the model has {len(found)}")
    for block, n in zip(found, counts, strict=True):
        if n < block.heads:
            keep_heads(block, torch.arange(int(n)))


# -- vocabulary ------------------------------------------------------------------------------------
class RemappedEmbedding(nn.Embedding):
    """(B, T) token ids of the full vocabulary → (B, T, dim): each id's kept row (`remap`), then the table.

    An nn.Embedding (`weight` is the kept rows), so the techniques that handle embeddings handle it;
    `remap` is a buffer, saved with the weights and exported as one more Gather in the ONNX graph."""

    remap: torch.Tensor

    def __init__(self, vocab_size: int, rows: int, dim: int, padding_idx: int | None = None) -> None:
        super().__init__(rows, dim, padding_idx=padding_idx)
        # int32 halves the file bytes of int64; (vocab_size,) row of every token id
        self.register_buffer("remap", torch.zeros(vocab_size, dtype=torch.int32))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(self.remap[ids])  # (B, T) ids → (B, T) rows → (B, T, dim)

    def extra_repr(self) -> str:
        return f"vocab_size={self.remap.numel()}, {super().extra_repr()}"


def keep_vocab(model: nn.Module, ids: torch.Tensor, unk_id: int) -> None:
    """Keep the word-embedding rows of token `ids` (sorted, unk_id among them); any other id reads [UNK]'s row.

    `model` is the transformers model; an already remapped embedding is pruned again through its remap."""
    old = model.get_input_embeddings()  # type: ignore[operator]
    if not isinstance(old, nn.Embedding):
        raise IncompatibleModelError(f"vocab_keep needs an nn.Embedding word embedding; this model has "
                                     f"{type(old).__name__}")  # fmt: skip
    vocab = old.remap.numel() if isinstance(old, RemappedEmbedding) else old.num_embeddings
    source = old.remap.long() if isinstance(old, RemappedEmbedding) else torch.arange(vocab)  # id → current row
    ids = ids.long().cpu()
    position = torch.searchsorted(ids, torch.tensor(unk_id))
    if int(position) >= len(ids) or int(ids[position]) != unk_id:  # internal: the caller keeps [UNK]
        raise ValueError(f"unk id {unk_id} is not among the kept ids")
    remap = torch.full((vocab,), int(position), dtype=torch.int32)
    remap[ids] = torch.arange(len(ids), dtype=torch.int32)
    pad = old.padding_idx
    new_pad = int(remap[int((source == pad).nonzero()[0])]) if pad is not None and (source == pad).any() else None
    new = RemappedEmbedding(vocab, len(ids), old.embedding_dim, padding_idx=new_pad)
    with torch.no_grad():
        new.weight.copy_(old.weight.detach()[source[ids].to(old.weight.device)])  # (kept, dim)
        new.remap.copy_(remap)
    model.set_input_embeddings(new.to(old.weight.device))  # type: ignore[operator]
