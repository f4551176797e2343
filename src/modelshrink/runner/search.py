"""Search under an accuracy budget: the smallest (or fastest) model whose validation accuracy
stays within `max_drop` percentage points of the baseline's, over techniques and their settings.

Optuna's TPE sampler proposes pipelines (prune → cluster → quantize, each optional, with its
parameters); which techniques fill each stage and what they ask of the trial, each technique's
config declares (`search_stage`, `search_space`; techniques/base.py). Every proposal runs as an ordinary variant of a run folder, so each trial is a
row of the results store (a rerun of the search resumes from it, and a repeated proposal is
not recomputed), and trials of a batch run in parallel on the chosen executor (local
processes or Ray). Choosing looks at validation accuracy only; the winner's test accuracy is
reported, never used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.errors import ConfigError, RegistryError
from modelshrink.report.pareto import pareto_front
from modelshrink.runner.executors import Executor
from modelshrink.runner.run import Runner
from modelshrink.techniques import TECHNIQUES
from modelshrink.techniques.base import SEARCH_STAGES, SearchStage, SearchTrial

OBJECTIVES = {"size": "file_bytes", "latency": "latency_ms_p50"}


@dataclass
class Trial:
    number: int
    variant: str
    params: dict[str, Any]
    status: str
    cost: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    drop_pp: float | None = None  # baseline val accuracy minus this, in percentage points
    feasible: bool = False


def searched_kinds() -> dict[SearchStage, list[str]]:
    """The registered techniques each search stage chooses from (their configs' `search_stage`), by kind."""
    stages: dict[SearchStage, list[str]] = {stage: [] for stage in SEARCH_STAGES}
    for kind in sorted(TECHNIQUES):
        stage = TECHNIQUES[kind].config_cls.search_stage
        if stage is not None:
            stages[stage].append(kind)
    return stages


def _choose(trial: SearchTrial, stage: SearchStage, kinds: list[str]) -> str | None:
    """The technique (or None) a stage adds. Parameter names and choices are those search has always
    used (an on/off switch for a one-technique stage), so a seed proposes the same pipelines as before."""
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds[0] if trial.suggest_categorical(stage, [False, True]) else None
    chosen = trial.suggest_categorical(stage, ["none", *kinds])
    return None if chosen == "none" else str(chosen)


def propose(trial: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """One pipeline from an Optuna trial: (name, steps, params). Names are unique per pipeline."""
    steps: list[dict[str, Any]] = []
    name: list[str] = []
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
        steps.append(step)
        name.append(config_cls.model_validate(step).search_label())
    return "search-" + ("+".join(name) or "fp32"), steps, dict(trial.params)


def check_arguments(max_drop: float, trials: int, objective: str) -> None:
    """Refuse bad search settings before any data is read or executor started."""
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be >= 0 percentage points of validation accuracy, got {max_drop}")
    if trials < 1:
        raise ConfigError(f"--budget-trials must be at least 1, got {trials}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown --objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def search(
    cfg: RunConfig, out: Path, max_drop: float, trials: int, objective: str = "size",
    executor: Executor | None = None, jobs: int = 1, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Run the search and return {baseline, trials, frontier, winner} (also written to search.json)."""
    check_arguments(max_drop, trials, objective)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cost_col = OBJECTIVES[objective]
    seed = cfg.seeds[0]
    base_variant = VariantConfig(name="baseline")
    runner = Runner(cfg.model_copy(update={"variants": (base_variant,), "seeds": (seed,)}), out, log=log)
    data = runner.prepare()

    def run(variants: list[VariantConfig]) -> dict[str, dict[str, Any]]:
        r = Runner(cfg.model_copy(update={"variants": (base_variant, *variants), "seeds": (seed,)}), out, log=log)
        r.progress = runner.progress
        return {row["variant"]: row for row in r.run(data, executor) if row["seed"] == seed}

    base = run([])["baseline"]
    if base["status"] != "ok":
        raise ConfigError(f"the baseline failed, nothing to compare with: {base.get('error')}")
    base_val = base["val_accuracy"]
    log(f"baseline: val acc {base_val:.4f}, {base['file_bytes']:,} bytes, {base['latency_ms_p50']:.3f} ms")

    sampler = optuna.samplers.TPESampler(seed=seed)  # constraint-aware through Trial.set_constraint
    study = optuna.create_study(direction="minimize", sampler=sampler)
    done: list[Trial] = []
    batch = max(1, jobs)
    while len(done) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(done)))]
        proposals = [propose(t) for t in asked]
        rows = run([VariantConfig.model_validate({"name": n, "steps": s}) for n, s, _ in proposals])
        for ot, (name, _, params) in zip(asked, proposals, strict=True):
            t = _scored(Trial(ot.number, name, params, rows[name]["status"]), rows[name], cost_col, base_val, max_drop)
            if t.cost is None or t.drop_pp is None:
                study.tell(ot, state=optuna.trial.TrialState.FAIL)
            else:
                ot.set_constraint("accuracy_drop", t.drop_pp - max_drop)  # <= 0: within the budget
                study.tell(ot, t.cost)
            done.append(t)
            log(f"trial {t.number}: {name}: " + (f"{cost_col} {t.cost:,.3f}, val acc {t.val_accuracy:.4f} "
                f"(drop {t.drop_pp:+.2f} pp){'' if t.feasible else ', over budget'}" if t.cost is not None
                else f"failed: {rows[name].get('error')}"))  # fmt: skip

    base_trial = Trial(-1, "baseline", {}, "ok", float(base[cost_col]), base_val, base["test_accuracy"], 0.0, True)
    front, winner = _frontier_and_winner(base_trial, done)
    result = {
        "objective": objective, "cost_column": cost_col, "max_drop_pp": max_drop, "seed": seed,
        "baseline": vars(base_trial), "trials": [vars(t) for t in done], "frontier": [vars(t) for t in front],
        "winner": vars(winner),
    }  # fmt: skip
    (Path(out) / "search.json").write_text(json.dumps(result, indent=1))
    return result


def _scored(t: Trial, row: dict[str, Any], cost_col: str, base_val: float, max_drop: float) -> Trial:
    """`t` with its cost and accuracies from its row; a failed row (or one without the cost) leaves them None."""
    if row["status"] != "ok" or row.get(cost_col) is None:
        return t
    t.cost, t.val_accuracy, t.test_accuracy = float(row[cost_col]), row["val_accuracy"], row["test_accuracy"]
    t.drop_pp = 100 * (base_val - row["val_accuracy"])
    t.feasible = t.drop_pp <= max_drop
    return t


def _frontier_and_winner(base: Trial, done: list[Trial]) -> tuple[list[Trial], Trial]:
    """The Pareto frontier (cost vs validation accuracy) and the cheapest feasible pipeline."""
    ok = [t for t in done if t.cost is not None]
    candidates = [base, *{t.variant: t for t in ok}.values()]  # a repeated pipeline counts once
    front = [candidates[i] for i in pareto_front([(t.cost, t.val_accuracy) for t in candidates])]  # type: ignore[misc]
    feasible = [t for t in candidates if t.feasible]
    winner = min(feasible, key=lambda t: (t.cost, -(t.val_accuracy or 0)))  # the baseline is always feasible
    return front, winner
