"""prune.structured: remove whole units, so the dense model is physically smaller and faster.

Unlike masked (unstructured) pruning, nothing is zeroed: rows and columns are cut out and the
model is rebuilt with smaller layers, from a `ModelConfig` the compact file and the runner can
rebuild it from. As in Torch-Pruning (Fang et al., CVPR 2023), *importance* (how much a unit
matters: L1, L2 or Taylor) is kept apart from the *pruner* (which tensors a unit spans and how
they are sliced); a unit's importance sums over every weight that belongs to it.

What is removed, per model:
- LSTMClassifier: LSTM hidden units (a unit's rows in all four gates of weight_ih/weight_hh and
  the biases, its column in weight_hh and in the classifier), embedding dimensions (columns of
  the embedding and of weight_ih), and rare words (vocabulary pruning: the tokenizer numbers
  words by frequency, 0 pad and 1 OOV, so keeping the first `vocab_keep` rows and reading larger
  ids as OOV costs nothing at inference; the model maps them in forward, so the ONNX file does).
- TinyCNN: output channels of both convolutions (and the matching input channels of the next).
The classifier's output neurons are the labels and are never removed (listed as skipped).
Torch-Pruning itself is not used: it traces the graph through a forward pass and does not
support nn.LSTM's fused gates; the models here are few and known, so their groups are written out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models.builders import ModelConfig, build_model
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.hf import HFClassifier
from modelshrink.models.lstm import LSTMClassifier
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

Importance = Literal["l1", "l2", "taylor"]


class StructuredPruneConfig(TechniqueConfig):
    """Remove LSTM hidden units / conv channels, embedding dimensions and rare words; then fine-tune."""

    kind: Literal["prune.structured"] = "prune.structured"
    unit_sparsity: float = Field(0.5, ge=0.0, lt=1.0)  # fraction of LSTM hidden units / conv channels removed
    embed_dim_sparsity: float = Field(0.0, ge=0.0, lt=1.0)  # fraction of embedding dimensions removed
    vocab_keep: int | None = Field(None, ge=2)  # keep the N most frequent word ids (0 pad, 1 OOV); None: all
    # l1/l2: norm of the unit's weights; taylor: sum |w * dL/dw| over one epoch of training batches
    # (Molchanov et al. 2019, first-order Taylor), accumulated without updating the model.
    importance: Importance = "l1"
    epochs: int = Field(2, ge=0)  # fine-tuning epochs after the cut; 0 = no fine-tuning
    search_stage: ClassVar[SearchStage | None] = "structured"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """Units and embedding dimensions removed in quarters, vocabulary pruning (None keeps every word;
        a `vocab_keep` at or above the vocabulary size keeps every word too), and the fine-tuning epochs after
        the cut: a big cut needs more (75 % of the reference LSTM's units: validation -1.13 points after 2
        epochs, -0.30 after 6; seed 0, 2026-12-01)."""
        return {
            "kind": "prune.structured",
            "unit_sparsity": trial.suggest_categorical(f"{prefix}unit_sparsity", [0.0, 0.25, 0.5, 0.75]),
            "embed_dim_sparsity": trial.suggest_categorical(f"{prefix}embed_dim_sparsity", [0.0, 0.25, 0.5]),
            "vocab_keep": trial.suggest_categorical(f"{prefix}vocab_keep", list(SEARCHED_VOCAB_KEEP)),
            "epochs": trial.suggest_categorical(f"{prefix}epochs", list(SEARCHED_EPOCHS)),
        }

    def search_label(self) -> str:
        parts = [f"u{self.unit_sparsity:g}", f"e{self.embed_dim_sparsity:g}" if self.embed_dim_sparsity else "",
                 f"v{self.vocab_keep}" if self.vocab_keep else "",
                 f"ft{self.epochs}" if self.epochs != SEARCHED_EPOCHS[0] else ""]  # fmt: skip
        return "struct-" + "-".join(p for p in parts if p)


SEARCHED_VOCAB_KEEP = (None, 1000, 2000, 3000, 4000, 6000)  # words kept (the hand-found route kept 3000-4000)
SEARCHED_EPOCHS = (2, 6)  # fine-tuning epochs after the cut; the first is the default, left out of the label


# -- importance ------------------------------------------------------------------------------
# A group is a list of (tensor name, dim, index offsets): unit j of the group owns slice
# `offset + j` along `dim` of that tensor, for every offset (LSTM gates: 0, H, 2H, 3H).
Group = list[tuple[str, int, tuple[int, ...]]]
Scores = Callable[[str], torch.Tensor]  # tensor name → elementwise score, the tensor's shape


def _norm_scores(model: nn.Module, p: int) -> Scores:
    params = dict(model.named_parameters())
    return lambda name: params[name].detach().abs().pow(p)


def _taylor_scores(model: nn.Module, ctx: RunContext) -> Scores:
    """|w * grad| summed over one epoch of training batches; the model's weights do not move.

    ctx.fine_tune runs the training loop (true labels, the model's loss); its optimizer gets only
    a dummy parameter, so the model is not updated, and on every step we add |w * grad| of the
    model's weights and clear their gradients (which that optimizer would not clear).
    """
    if ctx.fine_tune is None:
        raise ConfigError(
            "prune.structured with importance='taylor' needs training batches for gradients, and none are "
            "available here; use importance='l1' or 'l2'"
        )
    params = dict(model.named_parameters())
    acc = {name: torch.zeros_like(p) for name, p in params.items()}

    def on_step(_: int) -> None:
        with torch.no_grad():
            for name, p in params.items():
                if p.grad is not None:
                    acc[name] += (p * p.grad).abs()
                    p.grad = None

    dummy = nn.Parameter(torch.zeros(1))
    ctx.fine_tune(model, 1, on_step, [dummy])
    return lambda name: acc[name]


def group_importance(scores: Scores, group: Group, n_units: int) -> torch.Tensor:
    """(n_units,) importance: the sum of the scores of every weight slice a unit owns."""
    total = torch.zeros(n_units)
    for name, dim, offsets in group:
        s = scores(name)
        per_slice = s.transpose(0, dim).reshape(s.shape[dim], -1).sum(dim=1) if s.dim() > 1 else s  # (size of dim,)
        for off in offsets:
            total += per_slice[off : off + n_units]
    return total


def _keep(importance: torch.Tensor, sparsity: float, what: str) -> torch.Tensor:
    """Sorted indices of the units to keep: the most important round((1 - sparsity) * n)."""
    n = importance.numel()
    n_keep = n - round(sparsity * n)
    if n_keep < 1:
        raise ConfigError(
            f"prune.structured would remove every one of the {n} {what} (sparsity {sparsity}); "
            f"use a sparsity below {(n - 0.5) / n:.3f} to keep at least one"
        )
    return torch.sort(torch.argsort(importance, descending=True, stable=True)[:n_keep]).values


def _gate_rows(keep: torch.Tensor, hidden: int) -> torch.Tensor:
    return torch.cat([keep + g * hidden for g in range(4)])  # LSTM gates i, f, g, o: 4 blocks of H rows


# -- pruners ---------------------------------------------------------------------------------
@dataclass
class _Cut:
    state: dict[str, torch.Tensor]
    config: ModelConfig
    removed: dict[str, dict[str, int]]  # what → {"before": n, "after": n}
    skipped: list[SkippedLayer]


def _cut_lstm(model: LSTMClassifier, cfg: StructuredPruneConfig, scores: Scores, base: ModelConfig) -> _Cut:
    lstm = model.lstm
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise IncompatibleModelError(
            f"prune.structured handles a one-layer, one-direction LSTM without projection; got num_layers="
            f"{lstm.num_layers}, bidirectional={lstm.bidirectional}, proj_size={lstm.proj_size}"
        )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hidden, embed = lstm.hidden_size, lstm.input_size
    rows, ids = _embedding(model).num_embeddings, model.vocab_keep

    gates = (0, hidden, 2 * hidden, 3 * hidden)
    unit_group: Group = [("lstm.weight_ih_l0", 0, gates), ("lstm.weight_hh_l0", 0, gates),
                         ("lstm.weight_hh_l0", 1, (0,)), ("fc.weight", 1, (0,))]  # fmt: skip
    keep_h = _keep(group_importance(scores, unit_group, hidden), cfg.unit_sparsity, "LSTM hidden units")
    dim_group: Group = [("embedding.weight", 1, (0,)), ("lstm.weight_ih_l0", 1, (0,))]
    keep_e = _keep(group_importance(scores, dim_group, embed), cfg.embed_dim_sparsity, "embedding dimensions")

    g = _gate_rows(keep_h, hidden)
    state["lstm.weight_ih_l0"] = state["lstm.weight_ih_l0"][g][:, keep_e]  # (4H', E')
    state["lstm.weight_hh_l0"] = state["lstm.weight_hh_l0"][g][:, keep_h]  # (4H', H')
    state["lstm.bias_ih_l0"] = state["lstm.bias_ih_l0"][g]
    state["lstm.bias_hh_l0"] = state["lstm.bias_hh_l0"][g]
    state["fc.weight"] = state["fc.weight"][:, keep_h]  # (labels, H')
    new_rows = min(rows, cfg.vocab_keep) if cfg.vocab_keep else rows
    state["embedding.weight"] = state["embedding.weight"][:new_rows, keep_e]  # (V', E')
    vocab_keep = new_rows if new_rows < rows else ids

    config = base.model_copy(update={"name": "lstm", "embed_dim": len(keep_e), "hidden": len(keep_h),
                                     "vocab_keep": vocab_keep})  # fmt: skip
    removed = {"lstm_hidden_units": {"before": hidden, "after": len(keep_h)},
               "embedding_dims": {"before": embed, "after": len(keep_e)},
               "vocabulary_rows": {"before": rows, "after": new_rows}}  # fmt: skip
    skipped = [SkippedLayer("fc", "Linear", "output neurons are the labels; only its inputs shrink with the LSTM")]
    return _Cut(state, config, removed, skipped)


def _cut_cnn(model: TinyCNN, cfg: StructuredPruneConfig, scores: Scores, base: ModelConfig) -> _Cut:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    c1, c2 = model.conv1.out_channels, model.conv2.out_channels
    k1 = _keep(group_importance(scores, [("conv1.weight", 0, (0,)), ("conv2.weight", 1, (0,))], c1),
               cfg.unit_sparsity, "conv1 channels")  # fmt: skip
    k2 = _keep(group_importance(scores, [("conv2.weight", 0, (0,)), ("fc.weight", 1, (0,))], c2),
               cfg.unit_sparsity, "conv2 channels")  # fmt: skip
    state["conv1.weight"], state["conv1.bias"] = state["conv1.weight"][k1], state["conv1.bias"][k1]
    state["conv2.weight"] = state["conv2.weight"][k2][:, k1]  # (c2', c1', 3, 3)
    state["conv2.bias"] = state["conv2.bias"][k2]
    state["fc.weight"] = state["fc.weight"][:, k2]  # (labels, c2')
    config = base.model_copy(update={"name": "cnn", "channels": len(k1), "channels2": len(k2)})
    removed = {"conv1_channels": {"before": c1, "after": len(k1)}, "conv2_channels": {"before": c2, "after": len(k2)}}
    skipped = [SkippedLayer("fc", "Linear", "output neurons are the labels; only its inputs shrink with conv2")]
    if cfg.embed_dim_sparsity or cfg.vocab_keep:
        skipped.append(SkippedLayer("<model>", "TinyCNN", "no embedding: embed_dim_sparsity/vocab_keep do not apply"))
    return _Cut(state, config, removed, skipped)


def _embedding(model: LSTMClassifier) -> nn.Embedding:
    if not isinstance(model.embedding, nn.Embedding) or not isinstance(model.fc, nn.Linear):
        raise IncompatibleModelError(
            "prune.structured needs a plain Embedding and Linear classifier; this LSTM has factored (low-rank) "
            "layers — run prune.structured before lowrank in the pipeline"
        )
    return model.embedding


def _base_config(model: nn.Module, ctx: RunContext) -> ModelConfig:
    """The incoming model's config (from the runner), or one read off the model in library use."""
    if isinstance(ctx.model_config, ModelConfig):
        return ctx.model_config
    if isinstance(model, LSTMClassifier):
        return ModelConfig(name="lstm", embed_dim=model.lstm.input_size, hidden=model.lstm.hidden_size,
                           dropout=model.dropout.p, l2_input=model.l2_input, vocab_keep=model.vocab_keep)  # fmt: skip
    return ModelConfig(name="cnn", channels=model.conv1.out_channels, channels2=model.conv2.out_channels)  # type: ignore[union-attr,arg-type]


def _input_dim(model: nn.Module, ctx: RunContext) -> int:
    if ctx.input_dim is not None:
        return ctx.input_dim
    if isinstance(model, LSTMClassifier):
        return _embedding(model).num_embeddings  # library use: the vocabulary the model was built for
    return int(model.conv1.in_channels)  # type: ignore[union-attr,arg-type]


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_technique(StructuredPruneConfig)
def prune_structured(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext) -> TechniqueResult:
    """Structured pruning: cut whole LSTM units, embedding dims, rare words or conv channels; fine-tune."""
    if isinstance(model, HFClassifier):
        raise IncompatibleModelError(
            "prune.structured cuts the layer groups of the LSTM and TinyCNN, not of a Hugging Face transformer "
            "(HFClassifier, --model hf:PATH); use prune.transformer (head_sparsity, ffn_sparsity, vocab_keep)"
        )
    if not isinstance(model, LSTMClassifier | TinyCNN):
        raise IncompatibleModelError(
            f"prune.structured does not know the layer groups of {type(model).__name__}; "
            f"supported models: LSTMClassifier (lstm), TinyCNN (cnn)"
        )
    if isinstance(model, LSTMClassifier):
        _embedding(model)  # refuses a low-rank (factored) model before any work
    require_fine_tuning(ctx, "prune.structured", cfg.epochs, "to cut without fine-tuning")
    scores = (
        _taylor_scores(model, ctx)
        if cfg.importance == "taylor"
        else _norm_scores(model, 1 if cfg.importance == "l1" else 2)
    )
    base = _base_config(model, ctx)
    cut = (
        _cut_lstm(model, cfg, scores, base) if isinstance(model, LSTMClassifier) else _cut_cnn(model, cfg, scores, base)
    )

    input_dim = _input_dim(model, ctx)
    num_labels = ctx.num_labels or int(model.fc.out_features)  # type: ignore[arg-type]
    pruned = build_model(cut.config, input_dim, num_labels)
    pruned.load_state_dict(cut.state)  # strict: every sliced tensor must fit the rebuilt model
    if cfg.epochs > 0 and ctx.fine_tune is not None:
        ctx.fine_tune(pruned, cfg.epochs, None, None)
    pruned.eval()

    before, after = _parameters(model), _parameters(pruned)
    details = {
        "importance": cfg.importance,
        "removed": cut.removed,
        "parameters_before": before,
        "parameters_after": after,
        "parameter_ratio": after / before,  # dense parameters kept (no zeros: the tensors are smaller)
        "model": cut.config.model_dump(mode="json"),
    }
    return TechniqueResult(model=pruned, skipped=cut.skipped, details=details, model_config=cut.config,
                           input_dim=input_dim)  # fmt: skip
