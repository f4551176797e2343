"""prune.nm: N:M semi-structured sparsity (2:4 by default), kept through fine-tuning and verified.

In every run of M consecutive weights along a layer's input dimension, only the N largest in
magnitude stay nonzero — the pattern NVIDIA's sparse tensor cores run at 2× (2:4; Mishra et al.
2021, "Accelerating Sparse Deep Neural Networks"; their ASP recipe: one-shot magnitude masks,
then fine-tuning with the masks fixed). The input dimension is the one a matrix product reduces
over: the last dim of Linear (out, in), Embedding (V, E) and LSTM/GRU (gates·H, in) weights, and
the input channels of a Conv (out, in, kh, kw), grouped per (out, kh, kw) as ASP does.
A tensor whose input dimension is not a multiple of M is skipped with the reason (not padded:
padding would leave a pattern no kernel runs).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from modelshrink.errors import ConfigError
from modelshrink.techniques._targets import Target, prunable_weights, zero_masked_
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
from modelshrink.techniques.properties import NM, Property, Sparsity


class NMPruneConfig(TechniqueConfig):
    """Keep N of every M consecutive weights along the input dimension (2:4 by default); fine-tune with the masks."""

    kind: Literal["prune.nm"] = "prune.nm"
    n: int = Field(2, ge=1)  # weights kept in each group
    m: int = Field(4, ge=2)  # group length along the input dimension
    epochs: int = Field(1, ge=0)  # fine-tuning epochs with the masks fixed; 0 = one-shot
    search_stage: ClassVar[SearchStage | None] = "structured"
    search_establishes: ClassVar[tuple[str, ...]] = ("sparsity",)

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """2:4 (what sparse tensor cores run), 1:4 and 4:8; asked as one "n:m" choice."""
        n, m = str(trial.suggest_categorical(f"{prefix}pattern", ["2:4", "1:4", "4:8"])).split(":")
        return {"kind": "prune.nm", "n": int(n), "m": int(m)}

    def search_label(self) -> str:
        return f"nm{self.n}of{self.m}"

    @model_validator(mode="before")
    @classmethod
    def _check_n_m_raw(cls, raw: object) -> object:
        if isinstance(raw, dict) and isinstance(raw.get("n"), int) and raw["n"] <= 0:
            raise ValueError(f"n ({raw['n']}) must be >= 1: N:M keeps n of every m weights; 2:4 is the usual choice")
        return raw

    @model_validator(mode="after")
    def _check_n_m(self) -> Self:
        if self.n >= self.m:
            raise ValueError(
                f"n ({self.n}) must be smaller than m ({self.m}): N:M keeps n of every m weights, "
                f"so n >= m prunes nothing; use e.g. n=2, m=4"
            )
        return self


def _rows(w: torch.Tensor) -> torch.Tensor:
    """View `w` with its input dimension last and everything else flattened: (rows, in)."""
    if w.dim() == 4 or w.dim() == 3:  # Conv (out, in, kh[, kw]) → (out, kh, kw, in)
        return w.movedim(1, -1).reshape(-1, w.shape[1])
    return w.reshape(-1, w.shape[-1])


def input_dim_size(w: torch.Tensor) -> int:
    return int(w.shape[1] if w.dim() in (3, 4) else w.shape[-1])


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool keep-mask of `w`'s shape: the n largest |w| in each group of m along the input dimension."""
    rows = _rows(w.detach().abs())  # (R, in)
    groups = rows.reshape(rows.shape[0], -1, m)  # (R, in/m, m)
    top = groups.topk(n, dim=-1).indices  # (R, in/m, n)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(rows.shape)
    if w.dim() in (3, 4):  # back to (out, in, kh, kw)
        moved = list(w.movedim(1, -1).shape)
        return keep.reshape(moved).movedim(-1, 1)
    return keep.reshape(w.shape)


def nm_pattern_holds(w: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m along the input dimension has at most n nonzeros."""
    if input_dim_size(w) % m:
        return False
    rows = _rows(w.detach())
    return bool(((rows.reshape(rows.shape[0], -1, m) != 0).sum(-1) <= n).all())


@register_technique(NMPruneConfig)
def prune_nm(model: nn.Module, cfg: NMPruneConfig, ctx: RunContext) -> TechniqueResult:
    """N:M semi-structured pruning (2:4 default), masks fixed during fine-tuning, pattern verified."""
    require_fine_tuning(ctx, "prune.nm", cfg.epochs, "for one-shot N:M pruning")
    candidates, skipped = prunable_weights(model, exclude=ctx.exclude)
    targets: list[Target] = []
    for t in candidates:
        size = input_dim_size(t.weight)
        if size % cfg.m:
            skipped.append(SkippedLayer(t.qualified_name, type(t.module).__name__,
                                        f"input dimension {size} is not a multiple of m={cfg.m} (not padded)"))  # fmt: skip
        else:
            targets.append(t)
    if not targets:
        raise ConfigError(
            f"prune.nm {cfg.n}:{cfg.m} found no weight whose input dimension is a multiple of {cfg.m} "
            f"({len(candidates)} candidates); choose an m that divides the layer widths"
        )

    # ASP's recipe: masks from the trained weights, once; fine-tuning with the masks re-applied
    # after every optimizer step (in place: nn.LSTM's _flat_weights are the same Parameters).
    masks = {t.qualified_name: nm_mask(t.weight, cfg.n, cfg.m) for t in targets}
    weights = [t.weight for t in targets]
    factors = [masks[t.qualified_name].to(t.weight.dtype) for t in targets]

    def apply_masks(_: int = 0) -> None:
        zero_masked_(weights, factors)

    apply_masks()
    if cfg.epochs > 0 and ctx.fine_tune is not None:
        ctx.fine_tune(model, cfg.epochs, apply_masks, None)
    apply_masks()

    verified = {t.qualified_name: nm_pattern_holds(t.weight, cfg.n, cfg.m) for t in targets}
    if not all(verified.values()):  # internal invariant: the masks were just applied
        raise RuntimeError(f"N:M pattern broken after masking: {[k for k, ok in verified.items() if not ok]}")
    sparsity = {t.qualified_name: float((t.weight == 0).float().mean()) for t in targets}
    details = {
        "pattern": f"{cfg.n}:{cfg.m}",
        "pattern_verified": verified,  # every group of m along the input dimension has <= n nonzeros
        "sparsity": sparsity,  # measured zeros per tensor (>= 1 - n/m)
    }
    properties: list[Property] = [
        NM(tuple(sorted(verified)), cfg.n, cfg.m),
        Sparsity(tuple(sorted(sparsity)), _overall(targets)),
    ]
    return TechniqueResult(model=model, skipped=skipped, details=details, properties=properties)


def _overall(targets: list[Target]) -> float:
    zeros = sum(int((t.weight == 0).sum()) for t in targets)
    return zeros / sum(t.weight.numel() for t in targets)
