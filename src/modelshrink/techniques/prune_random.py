"""prune.random: the random-pruning baseline ShrinkBench (Blalock et al. 2020) asks every comparison to include.

Same targets, schedule, scope and fine-tuning as `prune.magnitude`; only the choice of weights
differs: each weight gets one random score (seeded by the run's seed) and the lowest scores are
zeroed. The scores are drawn once, so a schedule's masks are nested as sparsity rises, as
magnitude masks are. A magnitude criterion that does not beat this one is not doing much.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn

from modelshrink.techniques._targets import Target
from modelshrink.techniques.base import RunContext, SearchStage, SearchTrial, TechniqueResult, register_technique
from modelshrink.techniques.prune_magnitude import MagnitudePruneConfig, _Pruner, run_pruning


class RandomPruneConfig(MagnitudePruneConfig):
    """Zero random weights, on prune.magnitude's schedule; the baseline any pruning criterion must beat."""

    kind: Literal["prune.random"] = "prune.random"  # type: ignore[assignment]
    # A baseline to compare criteria against, not a candidate for the best model: never searched.
    search_stage: ClassVar[SearchStage | None] = None

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        return None


class _RandomPruner(_Pruner):
    def __init__(self, targets: list[Target], cfg: MagnitudePruneConfig, seed: int) -> None:
        super().__init__(targets, cfg)
        gen = torch.Generator().manual_seed(seed)
        self._scores = {t.qualified_name: torch.rand(t.weight.shape, generator=gen) for t in targets}

    def scores(self, target: Target) -> torch.Tensor:
        return self._scores[target.qualified_name].to(target.weight.device)


@register_technique(RandomPruneConfig)
def prune_random(model: nn.Module, cfg: RandomPruneConfig, ctx: RunContext) -> TechniqueResult:
    """Random unstructured pruning (prune.magnitude's schedule, random masks): the baseline criterion."""
    return run_pruning(model, cfg, ctx, lambda targets, c: _RandomPruner(targets, c, ctx.seed))
