"""lowrank: truncated-SVD factorization of Embedding and Linear weights.

A weight W (m×n) of rank ≤ min(m, n) is replaced by its best rank-r approximation
(Eckart–Young): W ≈ (U_r S_r)(V_rᵀ), stored as two layers with r·(m + n) parameters instead
of m·n, so the model is physically smaller and does fewer multiply-adds when r < mn/(m+n).

- Linear(in, out) → Linear(in, r, no bias) → Linear(r, out) (the original bias).
- Embedding(V, E) → Embedding(V, r) → Linear(r, E, no bias); the padding row stays exactly zero.

The rank is fixed (`embed_rank`, `linear_rank`), or a share of the layer's parameters
(`params_kept`: r = ⌊params_kept · m·n / (m+n)⌋), or, for a layer given neither, the smallest r keeping
`energy` of the squared singular values (Σ_{i<r} s_i² ≥ energy · Σ s_i²). A layer the factorization
would not shrink is left as it is and listed as skipped. For the reference LSTM the factored model
rebuilds from ModelConfig(embed_rank=…, fc_rank=…), which the result carries, so its compact file
loads back. A Hugging Face transformer (`--model hf:PATH`) factors the `parts` of its encoder blocks
(default: the FFN's two Linears; `attention`: the query/key/value/output projections; `embeddings`:
the word embedding), and its saved transformers config records each factored layer's rank
(models/hf_lowrank.py), so build_hf and the compact file rebuild it. Other registered models (whose
configs cannot describe a factored layer) are refused rather than written as files that do not load.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models.builders import ModelConfig
from modelshrink.models.hf import HFClassifier
from modelshrink.models.hf_lowrank import Part, factored_layer, part_layers, record_ranks, set_module
from modelshrink.models.hf_prune import RemappedEmbedding
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

# ModelConfig fields that rebuild a factored layer, per model name and module name.
_RANK_FIELDS: dict[str, dict[str, str]] = {"lstm": {"embedding": "embed_rank", "fc": "fc_rank"}}


class LowRankConfig(TechniqueConfig):
    """Replace Embedding and Linear weights by rank-r factors (truncated SVD), then fine-tune."""

    kind: Literal["lowrank"] = "lowrank"
    embed_rank: int | None = Field(None, ge=1)  # rank of every Embedding; None: chosen by `energy`
    linear_rank: int | None = Field(None, ge=1)  # rank of every Linear; None: chosen by `energy`
    energy: float = Field(0.9, gt=0.0, le=1.0)  # share of Σ s² kept when a rank is chosen per layer
    # rank chosen so a factored layer keeps about this share of its parameters, r = ⌊params_kept·m·n/(m+n)⌋
    # (overrides `energy`; a fixed embed_rank/linear_rank overrides it). None: `energy` chooses.
    params_kept: float | None = Field(None, gt=0.0, lt=1.0, exclude_if=lambda v: v is None)
    # hf models: the parts of every encoder block factored ("ffn": its two Linears; "attention": query, key,
    # value and output projections; "embeddings": the word embedding). None: ("ffn",). Other models: unset.
    parts: tuple[Part, ...] | None = Field(None, min_length=1, exclude_if=lambda v: v is None)
    epochs: int = Field(1, ge=0)  # fine-tuning epochs after factoring; 0 = SVD only
    search_stage: ClassVar[SearchStage | None] = "structured"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """Ranks chosen per layer by the share of squared singular values kept."""
        return {"kind": "lowrank", "energy": trial.suggest_categorical(f"{prefix}energy", [0.5, 0.7, 0.8, 0.9, 0.95])}

    @field_validator("parts")
    @classmethod
    def _distinct_parts(cls, parts: tuple[Part, ...] | None) -> tuple[Part, ...] | None:
        if parts is not None and len(set(parts)) != len(parts):
            raise ValueError(f"parts {list(parts)} names a part twice; list each of ffn, attention, embeddings once")
        return parts

    def search_label(self) -> str:
        return f"lowrank-p{self.params_kept:g}" if self.params_kept is not None else f"lowrank{self.energy:g}"


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i<r} s_i² ≥ energy · Σ s_i² (s sorted descending); at least 1."""
    power = singular_values.double().pow(2)
    total = float(power.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(power, 0) / total  # (k,)
    return int(torch.searchsorted(cumulative, torch.tensor(energy - 1e-12, dtype=cumulative.dtype))) + 1


def _factor(layer: nn.Linear | nn.Embedding, rank: int) -> nn.Sequential:
    """`layer` as its two rank-`rank` factors (truncated SVD), in a Sequential."""
    w = layer.weight.detach().double()  # Linear (out, in); Embedding (V, E)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (m, k), (k,), (k, n)
    pair = factored_layer(layer, rank)
    first, second = pair[0], pair[1]
    with torch.no_grad():
        if isinstance(layer, nn.Embedding):
            first.weight.copy_(u[:, :rank] * s[:rank])  # (V, r)
            if layer.padding_idx is not None:
                first.weight[layer.padding_idx] = 0.0  # exactly zero, as nn.Embedding keeps it
            second.weight.copy_(vh[:rank].T)  # (E, r)
            if isinstance(layer, RemappedEmbedding):
                first.remap.copy_(layer.remap)
        else:
            first.weight.copy_(vh[:rank])  # (r, in)
            second.weight.copy_(u[:, :rank] * s[:rank])  # (out, r)
            if layer.bias is not None:
                second.bias.copy_(layer.bias)
    return pair


def _rebuild_fields(ctx: RunContext) -> dict[str, str] | None:
    """Module name → the ModelConfig rank field that rebuilds it factored; None in library use (no config)."""
    base = ctx.model_config
    if base is None:
        return None
    rebuild = _RANK_FIELDS.get(getattr(base, "name", ""))
    if rebuild is None:
        raise IncompatibleModelError(
            f"lowrank: model {getattr(base, 'name', base)!r} has no config fields for factored layers, so "
            f"its compact file could not be rebuilt; supported: {', '.join(sorted([*_RANK_FIELDS, 'hf']))}"
        )
    return rebuild


_Plan = list[tuple[str, nn.Linear | nn.Embedding, int]]  # (module name, module, rank) per layer to factor


def _rank(name: str, module: nn.Linear | nn.Embedding, cfg: LowRankConfig) -> int | SkippedLayer:
    """The rank `module` is factored at, or why it is left as it is; a fixed rank that cannot shrink it raises."""
    w = module.weight.detach()
    m, n = w.shape
    fixed = cfg.embed_rank if isinstance(module, nn.Embedding) else cfg.linear_rank
    if fixed is not None and fixed >= min(m, n):
        field = "embed_rank" if isinstance(module, nn.Embedding) else "linear_rank"
        raise ConfigError(
            f"lowrank: {field}={fixed} is not below min(dims)={min(m, n)} of {name}.weight {tuple(w.shape)}; "
            f"a rank-{fixed} factorization cannot shrink it; choose {field} < {min(m, n)} or exclude {name!r}"
        )
    if fixed is not None:
        rank = fixed
    elif cfg.params_kept is not None:
        rank = max(1, int(cfg.params_kept * m * n / (m + n)))
    else:
        rank = energy_rank(torch.linalg.svdvals(w.double()), cfg.energy)
    if rank * (m + n) >= m * n:
        return SkippedLayer(
            name, type(module).__name__, f"rank {rank} would not shrink it ({rank}·({m}+{n}) ≥ {m}·{n})"
        )
    return rank


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(name == e or name.startswith(e + ".") or f"{name}.weight" == e for e in exclude)


def _plan(
    model: nn.Module, cfg: LowRankConfig, exclude: tuple[str, ...], rebuild: dict[str, str] | None
) -> tuple[_Plan, list[SkippedLayer]]:
    """The layers to factor and their ranks, and those left alone; raises before any change."""
    plan: _Plan = []
    skipped: list[SkippedLayer] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Embedding):
            if any(True for _ in module.parameters(recurse=False)):
                skipped.append(SkippedLayer(name or "<model>", type(module).__name__, "not an Embedding or Linear"))
            continue
        type_name = type(module).__name__
        if _excluded(name, exclude):
            skipped.append(SkippedLayer(name, type_name, "excluded by config"))
            continue
        if rebuild is not None and name not in rebuild:
            skipped.append(SkippedLayer(name, type_name, "the model config cannot rebuild it factored"))
            continue
        rank = _rank(name, module, cfg)
        if isinstance(rank, SkippedLayer):
            skipped.append(rank)
        else:
            plan.append((name, module, rank))
    return plan, skipped


def _hf_plan(hf: HFClassifier, cfg: LowRankConfig, exclude: tuple[str, ...]) -> tuple[_Plan, list[SkippedLayer]]:
    """The chosen parts' layers of an hf model (names in hf.model) and their ranks; every other layer skipped."""
    chosen = cfg.parts or ("ffn",)
    plan: _Plan = []
    skipped: list[SkippedLayer] = []
    seen: set[str] = set()
    for part, names in part_layers(hf.model).items():
        for name in names:
            seen.add(name)
            module = hf.model.get_submodule(name)
            if isinstance(module, nn.Sequential):
                skipped.append(SkippedLayer(name, "Sequential", "already factored (by an earlier lowrank step)"))
            elif not isinstance(module, nn.Linear | nn.Embedding):
                skipped.append(SkippedLayer(name, type(module).__name__, "not an Embedding or Linear"))
            elif part not in chosen:
                skipped.append(SkippedLayer(name, type(module).__name__, f"{part} is not in parts {list(chosen)}"))
            elif _excluded(f"model.{name}", exclude):
                skipped.append(SkippedLayer(name, type(module).__name__, "excluded by config"))
            elif isinstance(rank := _rank(name, module, cfg), SkippedLayer):
                skipped.append(rank)
            else:
                plan.append((name, module, rank))
    factored = tuple(f"{n}." for n in seen)
    for name, module in hf.model.named_modules():  # the rest: pooler, classifier, position embeddings, LayerNorms
        if name in seen or name.startswith(factored) or not any(True for _ in module.parameters(recurse=False)):
            continue
        skipped.append(SkippedLayer(name, type(module).__name__, "not in an encoder block's FFN or attention, nor "
                                    "the word embedding"))  # fmt: skip
    return plan, skipped


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _new_config(model: nn.Module, ranks: dict[str, int], ctx: RunContext) -> ModelConfig | None:
    """The model config that rebuilds the factored model; None when nothing changed or in library use (LSTM)."""
    if not ranks:
        return None
    if isinstance(model, HFClassifier):
        record_ranks(model.model, ranks)  # the transformers config the saved file carries
        saved = model.config_dict()
        base = ctx.model_config if isinstance(ctx.model_config, ModelConfig) else None
        return base.model_copy(update={"hf_config": saved}) if base else ModelConfig(name="hf", hf_config=saved)
    rebuild = _rebuild_fields(ctx)
    return ctx.model_config.model_copy(update={rebuild[name]: r for name, r in ranks.items()}) if rebuild else None


@register_technique(LowRankConfig)
def lowrank(model: nn.Module, cfg: LowRankConfig, ctx: RunContext) -> TechniqueResult:
    """Low-rank factorization (truncated SVD) of Embedding and Linear weights, fine-tuned."""
    require_fine_tuning(ctx, "lowrank", cfg.epochs, "to factor without fine-tuning")
    # Plan every layer first (ranks, errors), change the model only after all checks passed.
    if isinstance(model, HFClassifier):
        target: nn.Module = model.model  # layer names as the saved transformers config records them
        plan, skipped = _hf_plan(model, cfg, ctx.exclude)
    else:
        if cfg.parts is not None:
            raise ConfigError(f"lowrank: parts {list(cfg.parts)} selects the blocks of a Hugging Face transformer "
                              f"(--model hf:PATH); {type(model).__name__} has none: remove `parts`")  # fmt: skip
        target = model
        plan, skipped = _plan(model, cfg, ctx.exclude, _rebuild_fields(ctx))

    before = _parameters(model)
    ranks: dict[str, int] = {}
    energies: dict[str, float] = {}
    layer_parameters: dict[str, list[int]] = {}
    for name, module, rank in plan:
        s = torch.linalg.svdvals(module.weight.detach().double())
        energies[name] = round(float(s[:rank].pow(2).sum() / s.pow(2).sum().clamp_min(1e-30)), 6)
        new = _factor(module, rank)
        layer_parameters[name] = [_parameters(module), _parameters(new)]
        set_module(target, name, new)
        ranks[name] = rank

    if plan and cfg.epochs > 0 and ctx.fine_tune is not None:
        ctx.fine_tune(model, cfg.epochs, None, None)
    model.eval()

    new_config = _new_config(model, ranks, ctx)
    after = _parameters(model)
    details = {
        "ranks": ranks,  # layer → rank kept
        "energy_kept": energies,  # layer → share of Σ s² the rank keeps (before fine-tuning)
        "layer_parameters": layer_parameters,  # layer → [parameters before, after] (weights and bias)
        "parameters_before": before,
        "parameters_after": after,
        "params": after,
    }
    return TechniqueResult(model=model, skipped=skipped, details=details, model_config=new_config,
                           input_dim=ctx.input_dim if new_config is not None else None)  # fmt: skip
