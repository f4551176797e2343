"""The factored layers of a low-rank transformer (`lowrank` on an hf model) and their rebuild from its config.

`lowrank` replaces a Linear(in, out) by Linear(in, r, no bias) → Linear(r, out) and the word embedding
Embedding(V, E) by Embedding(V, r) → Linear(r, E, no bias) (an `nn.Sequential` in the layer's place, so the
transformers forward calls it unchanged). No transformers config field can say that, so the saved config
records each factored layer's rank under `RANKS_KEY` ({module name in the transformers model: rank});
`apply_factored_shapes` puts empty factored layers of those shapes into a model freshly built from such a
config (models/hf.py build_hf, after the pruned shapes of hf_prune.apply_saved_shapes), and the compact
file's weights then load into them strictly.

The parts of a block (`part_layers`) are named per family, as hf_prune names them: BERT-style encoders
(bert, roberta, electra, MiniLM, ...) and distilbert.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from modelshrink.errors import IncompatibleModelError
from modelshrink.models.hf_prune import RemappedEmbedding, encoder_layers

RANKS_KEY = "modelshrink_lowrank_ranks"  # the config key: {qualified module name: rank} of every factored layer

Part = Literal["ffn", "attention", "embeddings"]
# Module names inside one encoder layer, per family: the FFN's two Linears, the attention's four.
_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "bert": {
        "ffn": ("intermediate.dense", "output.dense"),
        "attention": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    },
    "distilbert": {
        "ffn": ("ffn.lin1", "ffn.lin2"),
        "attention": ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),
    },
}


def part_layers(model: nn.Module) -> dict[Part, list[str]]:
    """Part → the qualified names (in the transformers `model`) of its layers, in order; refuses other families."""
    layers, family = encoder_layers(getattr(model, "base_model", model))
    if not layers:
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise IncompatibleModelError(
            f"lowrank does not know the layer layout of model_type {model_type!r}; it factors BERT-style "
            "encoders (bert, roberta, electra, MiniLM, ...) and distilbert"
        )
    names = {id(m): n for n, m in model.named_modules()}
    found: dict[Part, list[str]] = {"ffn": [], "attention": []}
    for layer in layers:
        for part, suffixes in _PARTS[family].items():
            found[part].extend(f"{names[id(layer)]}.{s}" for s in suffixes)  # type: ignore[index]
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    found["embeddings"] = [names[id(embedding)]] if id(embedding) in names else []
    return found


def factored_layer(layer: nn.Linear | nn.Embedding, rank: int) -> nn.Sequential:
    """The two layers that replace `layer` at `rank`, uninitialised (same dtype and device)."""
    if isinstance(layer, nn.Linear):
        pair = nn.Sequential(nn.Linear(layer.in_features, rank, bias=False),
                             nn.Linear(rank, layer.out_features, bias=layer.bias is not None))  # fmt: skip
    else:
        table = (
            RemappedEmbedding(layer.remap.numel(), layer.num_embeddings, rank, layer.padding_idx)
            if isinstance(layer, RemappedEmbedding)  # a vocabulary-pruned table (prune.transformer): remap first
            else nn.Embedding(layer.num_embeddings, rank, padding_idx=layer.padding_idx)
        )
        pair = nn.Sequential(table, nn.Linear(rank, layer.embedding_dim, bias=False))
    return pair.to(device=layer.weight.device, dtype=layer.weight.dtype)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def record_ranks(model: nn.Module, ranks: dict[str, int]) -> None:
    """Add `ranks` (qualified name → rank) to the ones the model's config already records."""
    config = model.config  # type: ignore[union-attr]
    setattr(config, RANKS_KEY, {**(getattr(config, RANKS_KEY, None) or {}), **ranks})


def apply_factored_shapes(model: nn.Module) -> None:
    """Replace the layers the config records as factored by empty factored layers (the weights come after)."""
    for name, rank in (getattr(model.config, RANKS_KEY, None) or {}).items():  # type: ignore[union-attr]
        try:
            layer = model.get_submodule(name)
        except AttributeError as err:
            raise IncompatibleModelError(f"config {RANKS_KEY} names {name!r}, which this model does not have") from err
        if not isinstance(layer, nn.Linear | nn.Embedding):
            raise IncompatibleModelError(f"config {RANKS_KEY} names {name!r}, a {type(layer).__name__}, not a Linear "
                                         "or Embedding")  # fmt: skip
        set_module(model, name, factored_layer(layer, int(rank)))


def keep_layer_ranks(config: Any, layer_prefix: str, keep: list[int]) -> None:  # noqa: ANN401  # a transformers config
    """Renumber the recorded ranks for a model keeping the encoder layers `keep` (in order) of `layer_prefix`."""
    ranks = getattr(config, RANKS_KEY, None)
    if not ranks:
        return
    kept: dict[str, int] = {}
    for name, rank in ranks.items():
        if not name.startswith(layer_prefix):
            kept[name] = rank
            continue
        index, _, rest = name[len(layer_prefix) :].partition(".")
        if int(index) in keep:
            kept[f"{layer_prefix}{keep.index(int(index))}.{rest}"] = rank
    setattr(config, RANKS_KEY, kept)
