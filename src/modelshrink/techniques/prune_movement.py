"""prune.movement: movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning").

Made for pruning while fine-tuning a pretrained transformer: what decides whether a weight stays is
not its size but where fine-tuning moves it. Each weight W_ij gets a score accumulated over the
fine-tuning steps t (hard movement pruning, section 3 of the paper):

    S_ij = - sum_t (dL/dW'_ij)^(t) * W_ij^(t)        (W' = W ⊙ M, the masked weight the forward pass uses)

the gradient of the loss with respect to a score under the straight-through estimator, summed (SGD on S
at a constant rate ranks the same; the paper learns S with its optimizer, Adam, which rescales per score). A weight moving away
from zero gets a growing score; one moving towards zero a falling one. The mask M keeps the top-v
scores of each weight matrix (the paper's hard `Top_v`, per matrix as its TopKBinarizer), and v follows
the cubic schedule of Zhu & Gupta (2017) the paper uses: no pruning until `begin_step` (its initial
warm-up), then sparsity rising as s_f (1 - (1 - p)^3) to `end_step`, then constant (its final warm-up).

As in the paper, a masked weight keeps its value, frozen (its gradient through M is zero), so its
score still moves with the gradient of W' and the weight can come back with that value when its score
rises again. The forward pass sees exact zeros (prune.magnitude's in-place masks, re-applied after every
optimizer step); the frozen values live beside the model and are restored when a weight returns.

Where it starts (`start`): the model it receives (`incoming`, the default), or, as in the paper, the model's
pretrained weights with a new head (`pretrained`: an hf model read from a folder whose head is not yet trained
for these labels), so that the scores follow the whole fine-tuning, as the paper prunes pretrained BERT while
fine-tuning it. Neither start saves it on a model that fits its task within an epoch: the scores' sign is then
close to noise while their size follows |W|, so the lowest scores are large weights, and the first mask already
breaks the model (MiniLM on the emotion data, from either start: benchmarks/movement_start.py measures it,
docs/techniques-pruning.md has the figures).

Targets: the weight matrices of the encoder, as in the paper: embeddings and the classification head
(a Linear with one output per label) are not pruned and are listed as skipped. The schedule, scope,
fine-tuning and the final mask at `final_sparsity` are prune.magnitude's (`run_pruning`), as are the
result's details and its Sparsity property.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from modelshrink.errors import ConfigError
from modelshrink.techniques._targets import Target
from modelshrink.techniques.base import RunContext, SearchStage, SearchTrial, TechniqueResult, register_technique
from modelshrink.techniques.prune_magnitude import MagnitudePruneConfig, _Pruner, run_pruning


class MovementPruneConfig(MagnitudePruneConfig):
    """Prune the weights fine-tuning moves towards zero (movement scores), on the cubic schedule."""

    kind: Literal["prune.movement"] = "prune.movement"  # type: ignore[assignment]
    scope: Literal["per_tensor", "global"] = "per_tensor"  # the paper's hard Top_v: per weight matrix
    epochs: int = Field(2, ge=1)  # scores come from fine-tuning: at least one epoch
    # "pretrained": start from the model folder's pretrained weights with a new head (the paper's setting: pruning
    # during the fine-tuning itself), not from the model this step receives (e.g. the already fine-tuned baseline).
    start: Literal["incoming", "pretrained"] = Field("incoming", exclude_if=lambda v: v == "incoming")
    search_stage: ClassVar[SearchStage | None] = None  # not searched (yet): a comparison row

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        return None

    @model_validator(mode="after")
    def _polynomial(self) -> Self:
        if self.schedule != "polynomial":
            raise ValueError("prune.movement ranks weights by what fine-tuning did to them, so it needs the "
                             "gradual schedule; set schedule: polynomial (cubic, Zhu & Gupta 2017)")  # fmt: skip
        return self


class _MovementPruner(_Pruner):
    """prune.magnitude's pruner with movement scores, accumulated by gradient hooks on the targets."""

    def __init__(self, targets: list[Target], cfg: MagnitudePruneConfig) -> None:
        super().__init__(targets, cfg)
        self.movement = {t.qualified_name: torch.zeros_like(t.weight, dtype=torch.float32) for t in targets}
        self.frozen = {t.qualified_name: t.weight.detach().clone() for t in targets}  # values under the mask
        self.hooks = [t.weight.register_hook(self._accumulate(t)) for t in targets]

    def _accumulate(self, target: Target) -> Callable[[torch.Tensor], None]:
        name = target.qualified_name

        def hook(grad: torch.Tensor) -> None:  # grad: dL/dW' (the weight the forward pass read), W's shape
            with torch.no_grad():
                w = target.weight.detach()
                mask = self.masks.get(name)
                if mask is not None:  # masked weights: their frozen values, as W keeps them in the paper
                    w = torch.where(mask, w, self.frozen[name].to(w.device))
                self.movement[name] = self.movement[name].to(w.device).sub_(grad.float() * w.float())

        return hook

    def scores(self, target: Target) -> torch.Tensor:
        return self.movement[target.qualified_name]

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        old = dict(self.masks)
        for t in self.targets:  # remember the values of the weights about to be ranked (kept ones move)
            mask, w = old.get(t.qualified_name), t.weight.detach()
            self.frozen[t.qualified_name] = (
                w.clone() if mask is None else torch.where(mask, w, self.frozen[t.qualified_name].to(w.device))
            )
        super().update_masks(sparsity)
        for t in self.targets:  # weights whose score rose back above the cut return with their frozen value
            before = old.get(t.qualified_name)
            if before is not None:
                back = self.masks[t.qualified_name] & ~before
                t.weight[back] = self.frozen[t.qualified_name].to(t.weight.device)[back]

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


def _not_encoder(model: nn.Module, num_labels: int | None) -> tuple[str, ...]:
    """Module names the paper does not prune: embeddings and the classification head."""
    names = [n for n, m in model.named_modules() if n and isinstance(m, nn.Embedding)]
    names += [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear) and m.out_features == num_labels]
    return tuple(names)


def restart_from_pretrained(model: nn.Module, ctx: RunContext) -> str:
    """`model` gets the weights its folder holds (`ctx.model_config.path`) and a new head, seeded: the
    pretrained model fine-tuning starts from. Refused where there is no such folder or it is already fine-tuned."""
    from modelshrink.models.builders import build_model, fresh_head, pretrained

    mc = ctx.model_config
    config = getattr(getattr(model, "model", None), "config", None)
    if mc is None or mc.name != "hf" or not mc.path or mc.hf_config is not None or config is None:
        raise ConfigError("prune.movement start: pretrained reloads the pretrained weights of an hf model read from a "
                          "folder (model: {name: hf, path: ...}); this model has none: use start: incoming")  # fmt: skip
    labels = [str(config.id2label[i]) for i in range(len(config.id2label))]
    if pretrained(mc, labels):
        raise ConfigError(f"prune.movement start: pretrained: {mc.path} already classifies these labels (fine-tuned), "
                          "so it is not the pretrained start; point model.path at the pretrained folder it was "
                          "fine-tuned from, or use start: incoming")  # fmt: skip
    fresh = build_model(mc, ctx.input_dim or 0, len(labels))
    torch.manual_seed(ctx.seed)  # the new head, reproducible per seed
    fresh_head(fresh, labels)
    try:
        model.load_state_dict(fresh.state_dict())
    except RuntimeError as err:  # an earlier step changed the model's shapes
        raise ConfigError(
            "prune.movement start: pretrained replaces the weights with the folder's, so it must be "
            f"the variant's first step (the model's shapes changed before it: {str(err)[:120]})"
        ) from err
    return str(mc.path)


@register_technique(MovementPruneConfig)
def prune_movement(model: nn.Module, cfg: MovementPruneConfig, ctx: RunContext) -> TechniqueResult:
    """Movement pruning (Sanh et al. 2020): the lowest accumulated -W·dL/dW go, on the cubic schedule."""
    start = restart_from_pretrained(model, ctx) if cfg.start == "pretrained" else None
    skip = tuple(n for n in _not_encoder(model, ctx.num_labels) if n not in ctx.exclude)
    pruners: list[_MovementPruner] = []

    def make(targets: list[Target], c: MagnitudePruneConfig) -> _Pruner:
        pruners.append(_MovementPruner(targets, c))
        return pruners[-1]

    try:
        result = run_pruning(model, cfg, dataclasses.replace(ctx, exclude=(*ctx.exclude, *skip)), make)
    finally:
        for p in pruners:
            p.close()
    result.details["not_pruned"] = "embeddings and the classification head, as Sanh et al. (2020)"
    result.details["score"] = "hard movement: -sum_t dL/dW' * W, top-v per matrix"
    if start is not None:
        result.details["start"] = f"the pretrained weights of {start}, a new head, pruned while fine-tuning"
    return result
