"""lowrank: truncated-SVD factorization of Embedding and Linear weights.

A weight W (m×n) of rank ≤ min(m, n) is replaced by its best rank-r approximation
(Eckart–Young): W ≈ (U_r S_r)(V_rᵀ), stored as two layers with r·(m + n) parameters instead
of m·n, so the model is physically smaller and does fewer multiply-adds when r < mn/(m+n).

- Linear(in, out) → Linear(in, r, no bias) → Linear(r, out) (the original bias).
- Embedding(V, E) → Embedding(V, r) → Linear(r, E, no bias); the padding row stays exactly zero.

The rank is fixed (`embed_rank`, `linear_rank`) or, for a layer whose rank is not given, the
smallest r keeping `energy` of the squared singular values (Σ_{i<r} s_i² ≥ energy · Σ s_i²). A
layer the factorization would not shrink is left as it is and listed as skipped. For the
reference LSTM the factored model rebuilds from ModelConfig(embed_rank=…, fc_rank=…), which
the result carries, so its compact file loads back; other registered models (whose configs
cannot describe a factored layer) are refused rather than written as files that do not load.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
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
    epochs: int = Field(1, ge=0)  # fine-tuning epochs after factoring; 0 = SVD only
    search_stage: ClassVar[SearchStage | None] = "structured"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """Ranks chosen per layer by the share of squared singular values kept."""
        return {"kind": "lowrank", "energy": trial.suggest_categorical(f"{prefix}energy", [0.5, 0.7, 0.8, 0.9, 0.95])}

    def search_label(self) -> str:
        return f"lowrank{self.energy:g}"


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i<r} s_i² ≥ energy · Σ s_i² (s sorted descending); at least 1."""
    power = singular_values.double().pow(2)
    total = float(power.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(power, 0) / total  # (k,)
    return int(torch.searchsorted(cumulative, torch.tensor(energy - 1e-12, dtype=cumulative.dtype))) + 1


def _factor_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    w = layer.weight.detach().double()  # (out, in)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, k), (k,), (k, in)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(vh[:rank])  # (r, in)
        second.weight.copy_(u[:, :rank] * s[:rank])  # (out, r)
        if layer.bias is not None and second.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.dtype)


def _factor_embedding(layer: nn.Embedding, rank: int) -> nn.Sequential:
    w = layer.weight.detach().double()  # (V, E)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (V, k), (k,), (k, E)
    table = nn.Embedding(layer.num_embeddings, rank, padding_idx=layer.padding_idx)
    project = nn.Linear(rank, layer.embedding_dim, bias=False)
    with torch.no_grad():
        table.weight.copy_(u[:, :rank] * s[:rank])  # (V, r)
        if layer.padding_idx is not None:
            table.weight[layer.padding_idx] = 0.0  # exactly zero, as nn.Embedding keeps it
        project.weight.copy_(vh[:rank].T)  # (E, r)
    return nn.Sequential(table, project).to(layer.weight.dtype)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _rebuild_fields(ctx: RunContext) -> dict[str, str] | None:
    """Module name → the ModelConfig rank field that rebuilds it factored; None in library use (no config)."""
    base = ctx.model_config
    if base is None:
        return None
    rebuild = _RANK_FIELDS.get(getattr(base, "name", ""))
    if rebuild is None:
        raise IncompatibleModelError(
            f"lowrank: model {getattr(base, 'name', base)!r} has no config fields for factored layers, so "
            f"its compact file could not be rebuilt; supported: {', '.join(sorted(_RANK_FIELDS))}"
        )
    return rebuild


_Plan = list[tuple[str, nn.Linear | nn.Embedding, int]]  # (module name, module, rank) per layer to factor


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
        if any(name == e or name.startswith(e + ".") or f"{name}.weight" == e for e in exclude):
            skipped.append(SkippedLayer(name, type_name, "excluded by config"))
            continue
        if rebuild is not None and name not in rebuild:
            skipped.append(SkippedLayer(name, type_name, "the model config cannot rebuild it factored"))
            continue
        w = module.weight.detach()
        m, n = w.shape
        fixed = cfg.embed_rank if isinstance(module, nn.Embedding) else cfg.linear_rank
        if fixed is not None and fixed >= min(m, n):
            field = "embed_rank" if isinstance(module, nn.Embedding) else "linear_rank"
            raise ConfigError(
                f"lowrank: {field}={fixed} is not below min(dims)={min(m, n)} of {name}.weight {tuple(w.shape)}; "
                f"a rank-{fixed} factorization cannot shrink it; choose {field} < {min(m, n)} or exclude {name!r}"
            )
        rank = fixed if fixed is not None else energy_rank(torch.linalg.svdvals(w.double()), cfg.energy)
        if rank * (m + n) >= m * n:
            skipped.append(
                SkippedLayer(name, type_name, f"rank {rank} would not shrink it ({rank}·({m}+{n}) ≥ {m}·{n})")
            )
            continue
        plan.append((name, module, rank))
    return plan, skipped


@register_technique(LowRankConfig)
def lowrank(model: nn.Module, cfg: LowRankConfig, ctx: RunContext) -> TechniqueResult:
    """Low-rank factorization (truncated SVD) of Embedding and Linear weights, fine-tuned."""
    require_fine_tuning(ctx, "lowrank", cfg.epochs, "to factor without fine-tuning")
    rebuild = _rebuild_fields(ctx)
    # Plan every layer first (ranks, errors), change the model only after all checks passed.
    plan, skipped = _plan(model, cfg, ctx.exclude, rebuild)

    ranks: dict[str, int] = {}
    energies: dict[str, float] = {}
    for name, module, rank in plan:
        s = torch.linalg.svdvals(module.weight.detach().double())
        energies[name] = round(float(s[:rank].pow(2).sum() / s.pow(2).sum().clamp_min(1e-30)), 6)
        new = _factor_embedding(module, rank) if isinstance(module, nn.Embedding) else _factor_linear(module, rank)
        _set_module(model, name, new)
        ranks[name] = rank

    if plan and cfg.epochs > 0 and ctx.fine_tune is not None:
        ctx.fine_tune(model, cfg.epochs, None, None)
    model.eval()

    new_config = None
    if rebuild is not None and ranks:
        new_config = ctx.model_config.model_copy(update={rebuild[name]: r for name, r in ranks.items()})
    details = {
        "ranks": ranks,  # layer → rank kept
        "energy_kept": energies,  # layer → share of Σ s² the rank keeps (before fine-tuning)
        "params": sum(p.numel() for p in model.parameters()),
    }
    return TechniqueResult(model=model, skipped=skipped, details=details, model_config=new_config,
                           input_dim=ctx.input_dim if new_config is not None else None)  # fmt: skip
