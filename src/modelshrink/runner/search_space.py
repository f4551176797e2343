"""What `modelshrink search` proposes: ordered pipelines over every technique that declares a search space.

The stages, in pipeline order (techniques/base.py `SEARCH_STAGES`), each optional and each adding at
most one step:

    distill? → structured? → prune? → cluster? → quant?

- distill: `distill.kd` (student widths)
- structured: one of `prune.structured` (LSTM units, embedding dimensions, vocabulary), `lowrank`, `prune.nm`
- prune: `prune.magnitude` (constant sparsity)
- cluster: `cluster.kmeans`
- quant: `quant.fp16`, `quant.int8_dynamic`, `quant.int8_static`, `quant.qat`

Which techniques fill a stage, each technique's config says (`search_stage`, `search_space`). A
stage with one technique is switched on and off by a boolean parameter named after the stage; a
stage with several by a choice `"none" | kind...` under the stage's name, and each technique then
asks its parameters under `<kind>.<name>`. These rules keep the names the search used before
distill and structured stages existed (`prune`, `final_sparsity`, `cluster`, `clusters`, `quant`
with the same choices), so an Optuna study of earlier trials still accepts the new proposals.

A step keeps what earlier steps established: after `prune.magnitude` or `prune.nm` (sparsity),
`cluster.kmeans` and `quant.qat` get `preserve_sparsity`; after `cluster.kmeans`, `quant.qat` gets
`preserve_clusters` (declared by each config's `search_establishes` and `preserve_*` fields).
"""

from __future__ import annotations

from typing import Any

from modelshrink.errors import RegistryError
from modelshrink.techniques import TECHNIQUES
from modelshrink.techniques.base import SEARCH_STAGES, SearchStage, SearchTrial


def searched_kinds() -> dict[SearchStage, list[str]]:
    """The registered techniques each search stage chooses from (their configs' `search_stage`), by kind."""
    stages: dict[SearchStage, list[str]] = {stage: [] for stage in SEARCH_STAGES}
    for kind in sorted(TECHNIQUES):
        stage = TECHNIQUES[kind].config_cls.search_stage
        if stage is not None:
            stages[stage].append(kind)
    return stages


def _choose(trial: SearchTrial, stage: SearchStage, kinds: list[str]) -> str | None:
    """The technique (or None) a stage adds: an on/off switch for a one-technique stage, else a choice."""
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds[0] if trial.suggest_categorical(stage, [False, True]) else None
    chosen = trial.suggest_categorical(stage, ["none", *kinds])
    return None if chosen == "none" else str(chosen)


def propose(trial: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """One pipeline from an Optuna trial: (name, steps, params). The name is a function of the steps alone,
    so the same pipeline proposed twice is the same variant, and its row is read from the store."""
    steps: list[dict[str, Any]] = []
    name: list[str] = []
    established: set[str] = set()  # what earlier steps established ("sparsity", "clusters")
    for stage, kinds in searched_kinds().items():
        kind = _choose(trial, stage, kinds)
        if kind is None:
            continue
        config_cls = TECHNIQUES[kind].config_cls
        # A technique sharing its stage asks its parameters under its kind, so names never collide.
        step = config_cls.search_space(trial, "" if len(kinds) == 1 else f"{kind}.")
        if step is None:
            raise RegistryError(
                f"technique {kind!r} has search_stage {stage!r} but no search_space; "
                f"define {config_cls.__name__}.search_space or set its search_stage to None"
            )
        # A later step keeps what earlier ones established (e.g. cluster.kmeans after pruning keeps the zeros).
        step.update({f"preserve_{w}": True for w in sorted(established) if f"preserve_{w}" in config_cls.model_fields})
        established |= set(config_cls.search_establishes)
        steps.append(step)
        name.append(config_cls.model_validate(step).search_label())
    return "search-" + ("+".join(name) or "fp32"), steps, dict(trial.params)
