"""prune.transformer: remove whole attention heads and FFN neurons of a Hugging Face transformer.

The model really shrinks: the query/key/value rows and output-projection columns of a removed head,
and the FFN rows/columns of a removed intermediate neuron, are cut out (models/hf_prune.py), and the
config that rebuilds it records the new shapes (`intermediate_size`, heads per layer).

Importance (`importance="gradient"`, Michel et al. 2019, "Are Sixteen Heads Really Better than
One?"): a head's importance is |∂L/∂ξ_h| for a gate ξ_h = 1 on its output, summed over
`importance_batches` training batches. transformers 5.x no longer takes `head_mask`, so the gates
are applied by a forward pre-hook on the attention output projection's input (each head's slice of
(B, T, heads * head_size) times its ξ_h) — the same place and the same gradient as `head_mask`. An
FFN neuron gets the same criterion with a gate on the FFN output layer's input. For `scope="global"`
the head scores are normalised per layer (L2), as in Michel et al.'s code, before ranking across layers.
`importance="l2"` ranks by the squared weights a head or neuron owns instead (no training data needed).

At least one head is kept in every layer; every layer keeps the same number of FFN neurons, so one
`intermediate_size` rebuilds the model.

Vocabulary (`vocab_keep`): a pretrained tokenizer's 30,522 (BERT) word-embedding rows are most of a
small encoder's bytes, and one task's text uses a fraction of them. The rows kept are the tokenizer's
special tokens and the ids seen in the training rows (`"used"`: all of them; an int N: at most N rows
in all, the specials and then the most frequent ids, ties to the lower id); every other id reads the
[UNK] row, as if the tokenizer had written [UNK] there. The tokenizer and the model's inputs stay as
they were: an id → row remap sits in front of the smaller table (models/hf_prune.py RemappedEmbedding).
The cut comes first, so the head/FFN importance is taken on the model as it will be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from modelshrink.data.hf_text import tokenizer_special_ids, tokenizer_unk_id
from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models.builders import ModelConfig
from modelshrink.models.hf import HFClassifier
from modelshrink.models.hf_prune import Block, blocks, keep_ffn, keep_heads, keep_vocab, record_shapes
from modelshrink.techniques.base import (
    RunContext,
    SearchStage,
    SearchTrial,
    SkippedLayer,
    TechniqueConfig,
    TechniqueResult,
    register_technique,
    require_fine_tuning,
)


class TransformerPruneConfig(TechniqueConfig):
    """Remove the least important attention heads and FFN neurons of an hf model; then fine-tune."""

    kind: Literal["prune.transformer"] = "prune.transformer"
    head_sparsity: float = Field(0.5, ge=0.0, lt=1.0)  # share of all attention heads removed (>= 1 kept per layer)
    ffn_sparsity: float = Field(0.5, ge=0.0, lt=1.0)  # share of FFN intermediate neurons removed in every layer
    scope: Literal["global", "per_layer"] = "global"  # heads ranked across layers, or the same share per layer
    # gradient: |dL/d gate| over training batches (Michel et al. 2019); l2: squared weights of the unit
    importance: Literal["gradient", "l2"] = "gradient"
    importance_batches: int = Field(32, ge=1)  # training batches the gradient importance sums over
    epochs: int = Field(2, ge=0)  # fine-tuning epochs after the cut; 0 = no fine-tuning
    # Word-embedding rows kept: the special tokens plus the ids the training rows use ("used": all of them;
    # N: at most N rows in all, the most frequent first); other ids read [UNK]'s row. None: every row.
    vocab_keep: Annotated[int, Field(ge=2)] | Literal["used"] | None = Field(None, exclude_if=lambda v: v is None)
    # Not proposed by `modelshrink search` (None): its stages choose among all techniques of a stage
    # whatever the model, and this one refuses every model but hf; the space is declared for when it can.
    search_stage: ClassVar[SearchStage | None] = None

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """Head and FFN sparsity 0.1 ... 0.7 in steps of 0.1."""
        heads = round(trial.suggest_float(f"{prefix}head_sparsity", 0.1, 0.7, step=0.1), 2)
        ffn = round(trial.suggest_float(f"{prefix}ffn_sparsity", 0.1, 0.7, step=0.1), 2)
        return {"kind": cls.model_fields["kind"].default, "head_sparsity": heads, "ffn_sparsity": ffn}

    def search_label(self) -> str:
        vocab = f"-vocab{self.vocab_keep}" if self.vocab_keep is not None else ""
        return f"heads{self.head_sparsity:g}-ffn{self.ffn_sparsity:g}{vocab}"


# -- importance ------------------------------------------------------------------------------------
Scores = tuple[list[torch.Tensor], list[torch.Tensor]]  # per layer: (heads,) and (ffn,) importance


class _Enough(Exception):
    """Raised from on_step to end the importance pass after `importance_batches` batches."""


def _l2_scores(found: list[Block]) -> Scores:
    heads, ffn = [], []
    for b in found:
        d = b.head_size
        qkv = sum(lin.weight.detach().pow(2).sum(dim=1) for lin in (b.q, b.k, b.v))  # (heads * d,)
        o = b.o.weight.detach().pow(2).sum(dim=0)  # (heads * d,)
        heads.append((qkv + o).reshape(-1, d).sum(dim=1).cpu())
        ffn.append((b.ffn_in.weight.detach().pow(2).sum(dim=1) + b.ffn_out.weight.detach().pow(2).sum(dim=0)).cpu())
    return heads, ffn


def _gate_hook(gate: torch.Tensor, repeat: int) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
    def hook(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] * gate.repeat_interleave(repeat).to(args[0].dtype), *args[1:])  # (B, T, units * repeat)

    return hook


def _gradient_scores(model: nn.Module, found: list[Block], cfg: TransformerPruneConfig, ctx: RunContext) -> Scores:
    """|dL/d gate| summed over training batches; the model's weights do not move.

    ctx.fine_tune runs the training loop (true labels, the model's loss) with an optimizer over a
    dummy parameter only, so nothing is updated; after each step the gates' gradients are added up.
    """
    if ctx.fine_tune is None:
        raise ConfigError("prune.transformer with importance='gradient' needs training batches, and none are "
                          "available here; use importance='l2'")  # fmt: skip
    dev = next(model.parameters()).device
    head_gates = [torch.ones(b.heads, device=dev, requires_grad=True) for b in found]
    ffn_gates = [torch.ones(b.ffn, device=dev, requires_grad=True) for b in found]
    acc = [torch.zeros(b.heads) for b in found], [torch.zeros(b.ffn) for b in found]
    hooks = [b.o.register_forward_pre_hook(_gate_hook(g, b.head_size)) for b, g in zip(found, head_gates, strict=True)]
    hooks += [b.ffn_out.register_forward_pre_hook(_gate_hook(g, 1)) for b, g in zip(found, ffn_gates, strict=True)]

    def on_step(step: int) -> None:
        for gates, sums in zip((head_gates, ffn_gates), acc, strict=True):
            for gate, total in zip(gates, sums, strict=True):
                if gate.grad is not None:
                    total += gate.grad.detach().abs().float().cpu()
                    gate.grad = None
        if step >= cfg.importance_batches:
            raise _Enough

    try:
        ctx.fine_tune(model, 1, on_step, [nn.Parameter(torch.zeros(1, device=dev))])
    except _Enough:
        model.to(dev).eval()  # what fine_tune does when it ends on its own
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return acc


# -- selection -------------------------------------------------------------------------------------
def _heads_to_keep(scores: list[torch.Tensor], cfg: TransformerPruneConfig) -> list[torch.Tensor]:
    """Sorted head indices kept in each layer: the least important removed, at least one kept per layer."""
    counts = [len(s) for s in scores]
    if cfg.scope == "per_layer":
        remove = [min(round(cfg.head_sparsity * n), n - 1) for n in counts]
    else:
        normed = [s / (s.norm() + 1e-12) for s in scores]  # Michel et al.: layer-wise L2 normalisation
        order = torch.argsort(torch.cat(normed), stable=True).tolist()  # least important first
        layer_of = [i for i, n in enumerate(counts) for _ in range(n)]
        remove, budget = [0] * len(counts), round(cfg.head_sparsity * sum(counts))
        for flat in order:
            if budget == 0:
                break
            if remove[layer_of[flat]] < counts[layer_of[flat]] - 1:
                remove[layer_of[flat]] += 1
                budget -= 1
    return [torch.sort(torch.argsort(s, descending=True, stable=True)[: n - r]).values
            for s, n, r in zip(scores, counts, remove, strict=True)]  # fmt: skip


def _ffn_to_keep(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    n = len(scores[0])
    keep = max(1, n - round(sparsity * n))
    return [torch.sort(torch.argsort(s, descending=True, stable=True)[:keep]).values for s in scores]


# -- vocabulary ------------------------------------------------------------------------------------
def _vocab_to_keep(hf: HFClassifier, keep: int | str, ctx: RunContext) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """(sorted token ids kept, the [UNK] id, figures): the special tokens and the ids the training rows use."""
    tokenizer = ((ctx.preprocessing or {}).get("hf_tokenizer") or {}).get("tokenizer_json")
    if ctx.train_inputs is None or not tokenizer:
        raise ConfigError("prune.transformer vocab_keep needs the training rows and the model's tokenizer.json, and "
                          "this context offers none; run it in `modelshrink run` or set vocab_keep: null")  # fmt: skip
    unk = tokenizer_unk_id(tokenizer)
    if unk is None:
        raise IncompatibleModelError("prune.transformer vocab_keep: the tokenizer has no unknown token, so a "
                                     "dropped id would have no row to read; set vocab_keep: null")  # fmt: skip
    vocab = int(hf.model.config.vocab_size)
    rows = np.asarray(ctx.train_inputs())  # (N, T) ids, pre-padded with 0 (data/hf_text.py)
    counts = np.bincount(rows.ravel(), minlength=vocab)[:vocab]
    counts[0] = 0  # padding
    if hf.pad_id:  # the rows hold pad_id and 0 swapped: the real id 0 is counted under pad_id
        counts[0], counts[hf.pad_id] = counts[hf.pad_id], 0
    specials = {i for i in (*tokenizer_special_ids(tokenizer), unk, hf.pad_id) if 0 <= i < vocab}
    used = np.array([i for i in np.flatnonzero(counts) if i not in specials], dtype=np.int64)
    used = used[np.lexsort((used, -counts[used]))]  # most frequent first, ties to the lower id
    if keep == "used":
        chosen = used
    elif int(keep) < len(specials):
        raise ConfigError(f"prune.transformer vocab_keep {keep} is fewer than the tokenizer's {len(specials)} special "
                          f"tokens, always kept; set vocab_keep to at least {len(specials)} or 'used'")  # fmt: skip
    else:
        chosen = used[: int(keep) - len(specials)]
    ids = torch.tensor(sorted(specials | {int(i) for i in chosen}), dtype=torch.int64)
    seen = int(counts.sum())
    figures = {"special": len(specials), "ids_in_training": int((counts > 0).sum()),  # distinct ids seen
               "training_tokens_read_as_unk": (seen - int(counts[ids.numpy()].sum())) / max(seen, 1)}  # fmt: skip
    return ids, unk, figures


def _cut_vocab(hf: HFClassifier, keep: int | str, ctx: RunContext) -> dict[str, Any]:
    embedding = hf.model.get_input_embeddings()
    before = int(embedding.num_embeddings)
    ids, unk, figures = _vocab_to_keep(hf, keep, ctx)
    keep_vocab(hf.model, ids, unk)
    return {"before": before, "after": len(ids), **figures}


# -- the technique ---------------------------------------------------------------------------------
def _hf_model(model: nn.Module, ctx: RunContext) -> HFClassifier:
    """The model as an HFClassifier; any other model is refused by name."""
    if not isinstance(model, HFClassifier):
        name = getattr(ctx.model_config, "name", None)
        said = f"model {name!r} ({type(model).__name__})" if name else type(model).__name__
        raise IncompatibleModelError(
            f"prune.transformer removes attention heads and FFN neurons of a Hugging Face transformer "
            f"(--model hf:PATH); {said} is not one: use prune.structured or prune.magnitude"
        )
    return model


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_technique(TransformerPruneConfig)
def prune_transformer(model: nn.Module, cfg: TransformerPruneConfig, ctx: RunContext) -> TechniqueResult:
    """Structured transformer pruning: remove whole attention heads and FFN neurons (hf models); fine-tune."""
    hf = _hf_model(model, ctx)
    inner = hf.model
    found = blocks(inner)  # refuses an architecture whose layer layout it does not know
    require_fine_tuning(ctx, "prune.transformer", cfg.epochs, "to cut without fine-tuning")
    before = _parameters(model)
    vocab = _cut_vocab(hf, cfg.vocab_keep, ctx) if cfg.vocab_keep is not None else None
    heads_before, ffn_before = [b.heads for b in found], found[0].ffn
    head_scores, ffn_scores = _gradient_scores(model, found, cfg, ctx) if cfg.importance == "gradient" \
        else _l2_scores(found)  # fmt: skip
    kept_heads = _heads_to_keep(head_scores, cfg)
    kept_ffn = _ffn_to_keep(ffn_scores, cfg.ffn_sparsity)
    for block, heads, neurons in zip(found, kept_heads, kept_ffn, strict=True):
        keep_heads(block, heads)
        keep_ffn(block, neurons)
    record_shapes(inner)
    if cfg.epochs > 0 and ctx.fine_tune is not None:
        ctx.fine_tune(model, cfg.epochs, None, None)
    model.eval()

    saved = hf.config_dict()  # the rebuild: new FFN width and heads per layer (record_shapes)
    base = ctx.model_config if isinstance(ctx.model_config, ModelConfig) else None
    config = base.model_copy(update={"hf_config": saved}) if base else ModelConfig(name="hf", hf_config=saved)
    after = _parameters(model)
    details = {
        "importance": cfg.importance,
        "scope": cfg.scope,
        "heads_per_layer": {"before": heads_before, "after": [len(h) for h in kept_heads]},
        "removed_heads": [
            [i for i in range(n) if i not in set(k.tolist())] for n, k in zip(heads_before, kept_heads, strict=True)
        ],  # fmt: skip
        "ffn_per_layer": {"before": ffn_before, "after": len(kept_ffn[0])},
        **({"vocabulary_rows": vocab} if vocab else {}),
        "parameters_before": before,
        "parameters_after": after,
        "parameter_ratio": after / before,  # dense parameters kept (no zeros: the tensors are smaller)
    }
    kept = "hidden width is kept" if vocab else "vocabulary rows (vocab_keep: null) and hidden width are kept"
    skipped = [
        SkippedLayer("embeddings", type(getattr(inner.base_model, "embeddings", inner)).__name__,
                     f"{kept} (the residual stream is shared by every layer)"),
        SkippedLayer("classifier", "Linear", "output neurons are the labels"),
    ]  # fmt: skip
    return TechniqueResult(model=model, skipped=skipped, details=details, model_config=config,
                           input_dim=ctx.input_dim)  # fmt: skip
