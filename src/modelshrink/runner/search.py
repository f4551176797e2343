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
from modelshrink.store import config_key
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


STUDY_DB = "search.db"  # the default Optuna storage, in the run folder


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / STUDY_DB).resolve()}"


def study_name(cfg: RunConfig, objective: str, max_drop: float) -> str:
    """One study per (data, model, training, seed, objective, budget): machines asking the same join it.
    The data file's path is left out, so machines holding the same data at different paths still join."""
    shared = cfg.model_dump(mode="json", exclude={"variants", "seeds"})
    shared["data"].pop("path", None)
    return f"modelshrink-search-{objective}-" + config_key({**shared, "seed": cfg.seeds[0], "max_drop": max_drop})


def search(
    cfg: RunConfig, out: Path, max_drop: float, trials: int, objective: str = "size",
    executor: Executor | None = None, jobs: int = 1, log: Callable[[str], None] = print, storage: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the search and return {baseline, trials, frontier, winner} (also written to search.json).

    Two objectives, the cost (bytes or latency) down and validation accuracy up, in one Optuna study whose
    `best_trials` is the frontier; the accuracy budget is a constraint on each trial. The study lives in
    `storage` (an RDB URL; SQLite in `out` by default): a rerun resumes it, and other machines pointed at the
    same URL join it. `trials` counts every finished trial of the study, whoever ran it."""
    check_arguments(max_drop, trials, objective)
    _check_storage(storage)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cost_col, seed = OBJECTIVES[objective], cfg.seeds[0]
    base_variant = VariantConfig(name="baseline")
    runner = Runner(cfg.model_copy(update={"variants": (base_variant,), "seeds": (seed,)}), out, log=log)
    data = runner.prepare()
    Path(out).mkdir(parents=True, exist_ok=True)  # the default storage's home; a bad URL fails before training
    study = _study(optuna, storage or default_storage(out), study_name(cfg, objective, max_drop), seed)

    def run(variants: list[VariantConfig]) -> dict[str, dict[str, Any]]:
        r = Runner(cfg.model_copy(update={"variants": (base_variant, *variants), "seeds": (seed,)}), out, log=log)
        r.progress = runner.progress
        return {row["variant"]: row for row in r.run(data, executor) if row["seed"] == seed}

    base = run([])["baseline"]
    if base["status"] != "ok":
        raise ConfigError(f"the baseline failed, nothing to compare with: {base.get('error')}")
    base_val = base["val_accuracy"]
    log(f"baseline: val acc {base_val:.4f}, {base['file_bytes']:,} bytes, {base['latency_ms_p50']:.3f} ms")
    batch = max(1, jobs)
    while (left := trials - _finished(study)) > 0:
        asked = [study.ask() for _ in range(min(batch, left))]
        proposals = [propose(t) for t in asked]
        rows = run([VariantConfig.model_validate({"name": n, "steps": s}) for n, s, _ in proposals])
        for ot, (name, _, params) in zip(asked, proposals, strict=True):
            t = _scored(Trial(ot.number, name, params, rows[name]["status"]), rows[name], cost_col, base_val, max_drop)
            _tell(study, ot, t, rows[name].get("error"), max_drop)
            log(f"trial {t.number}: {name}: " + (f"{cost_col} {t.cost:,.3f}, val acc {t.val_accuracy:.4f} "
                f"(drop {t.drop_pp:+.2f} pp){'' if t.feasible else ', over budget'}" if t.cost is not None
                else f"failed: {rows[name].get('error')}"))  # fmt: skip

    done = [_from_study(ft, max_drop) for ft in study.get_trials(deepcopy=False) if ft.state.is_finished()]
    base_trial = Trial(-1, "baseline", {}, "ok", float(base[cost_col]), base_val, base["test_accuracy"], 0.0, True)
    best = [_from_study(ft, max_drop) for ft in study.best_trials]  # Optuna's Pareto set: feasible ones first
    front = _frontier(base_trial, done)
    # The cheapest feasible pipeline is on Optuna's (feasible) Pareto set; the baseline is always feasible.
    winner = min([base_trial, *(t for t in best if t.feasible)], key=lambda t: (t.cost, -(t.val_accuracy or 0)))
    result = {
        "objective": objective, "cost_column": cost_col, "max_drop_pp": max_drop, "seed": seed,
        "study": study.study_name, "baseline": vars(base_trial), "trials": [vars(t) for t in done],
        "best_trials": [vars(t) for t in best], "frontier": [vars(t) for t in front], "winner": vars(winner),
    }  # fmt: skip
    (Path(out) / "search.json").write_text(json.dumps(result, indent=1))
    return result


def _check_storage(storage: str | None) -> None:
    """A URL SQLAlchemy cannot parse is refused before any data is read or file written."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        if storage is not None:
            make_url(storage)
    except ArgumentError as err:
        raise ConfigError(f"--storage {storage!r} is not a database URL; pass one such as sqlite:///search.db") from err


def _study(optuna: Any, storage: str, name: str, seed: int) -> Any:
    from sqlalchemy.exc import SQLAlchemyError  # optuna's RDB storage is built on SQLAlchemy

    sampler = optuna.samplers.TPESampler(seed=seed)  # constraint-aware through Trial.set_constraint
    try:
        return optuna.create_study(storage=storage, study_name=name, directions=["minimize", "maximize"],
                                   sampler=sampler, load_if_exists=True)  # fmt: skip
    except (ValueError, ImportError, SQLAlchemyError) as err:  # a malformed URL, a missing driver, no server
        raise ConfigError(
            f"cannot open --storage {storage!r}: {err}; pass an RDB URL such as sqlite:///search.db"
        ) from err


def _finished(study: Any) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def _tell(study: Any, ot: Any, t: Trial, error: str | None, max_drop: float) -> None:
    """Record a trial: its figures as user attributes too, so a study alone rebuilds the result (other machines)."""
    import optuna

    ot.set_user_attr("variant", t.variant)
    if t.cost is None or t.drop_pp is None:
        ot.set_user_attr("error", str(error))
        study.tell(ot, state=optuna.trial.TrialState.FAIL)
        return
    ot.set_user_attr("test_accuracy", t.test_accuracy)
    ot.set_constraint("accuracy_drop", t.drop_pp - max_drop)  # <= 0: within the budget
    study.tell(ot, [t.cost, t.val_accuracy])


def _from_study(ft: Any, max_drop: float) -> Trial:
    variant = str(ft.user_attrs.get("variant", f"trial-{ft.number}"))
    if not ft.values:
        return Trial(ft.number, variant, dict(ft.params), "failed")
    cost, val = float(ft.values[0]), float(ft.values[1])
    drop = float(ft.constraints.get("accuracy_drop", 0.0)) + max_drop
    return Trial(ft.number, variant, dict(ft.params), "ok", cost, val, ft.user_attrs.get("test_accuracy"), drop,
                 drop <= max_drop)  # fmt: skip


def _scored(t: Trial, row: dict[str, Any], cost_col: str, base_val: float, max_drop: float) -> Trial:
    """`t` with its cost and accuracies from its row; a failed row (or one without the cost) leaves them None."""
    if row["status"] != "ok" or row.get(cost_col) is None:
        return t
    t.cost, t.val_accuracy, t.test_accuracy = float(row[cost_col]), row["val_accuracy"], row["test_accuracy"]
    t.drop_pp = 100 * (base_val - row["val_accuracy"])
    t.feasible = t.drop_pp <= max_drop
    return t


def _frontier(base: Trial, done: list[Trial]) -> list[Trial]:
    """The Pareto frontier (cost vs validation accuracy) of every pipeline tried, within budget or not."""
    ok = [t for t in done if t.cost is not None]
    candidates = [base, *{t.variant: t for t in ok}.values()]  # a repeated pipeline counts once
    return [candidates[i] for i in pareto_front([(t.cost, t.val_accuracy) for t in candidates])]  # type: ignore[misc]
