"""Search over every technique: the Pareto fronts of size and latency against validation accuracy.

Optuna proposes ordered pipelines (runner/search_space.py: distill? → structured? → prune? →
cluster? → quant?, each technique's parameters from its own config's search space). Every
proposal runs as an ordinary variant of a run folder, so each trial is a row of the results
store, keyed by its config: a rerun resumes, and a pipeline proposed again is read from the
store, not recomputed. In-process, trials share the fine-tuned prefixes of their pipelines
(the pipeline's prefix cache is kept across batches); batches of `--jobs` trials run in parallel
on local processes or Ray.

One multi-objective study: the deployable file's bytes, its latency at batch 1 and at batch 256
(one thread) down, validation accuracy up; the accuracy budget `max_drop` is a constraint on each
trial. The fronts (runner/search_front.py) are chosen on validation accuracy only; each front
point's test accuracy is reported afterwards, never used. Budgets: `trials` (finished trials of
the study) and `minutes` (wall time spent on the study, over every run that resumed it); proposing
stops when either is spent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.errors import ConfigError
from modelshrink.report.pareto import search_figures
from modelshrink.runner.executors import Executor
from modelshrink.runner.run import Runner
from modelshrink.runner.search_front import OBJECTIVES, STUDY_VALUES, Trial, summary
from modelshrink.runner.search_space import propose, searched_kinds
from modelshrink.store import config_key

__all__ = ["OBJECTIVES", "Budget", "check_arguments", "propose", "search", "searched_kinds"]
STUDY_DB = "search.db"  # the default Optuna storage, in the run folder
# 2: four values (bytes, ms at batch 1 and 256, validation accuracy), every technique; 3: prune.structured's epochs
SPACE_VERSION = 3


class Budget:
    """Trials and minutes a study may spend; `minutes` None: no time limit."""

    def __init__(self, trials: int, minutes: float | None = None) -> None:
        self.trials, self.minutes = trials, minutes

    def left(self, study: Any, spent_s: float) -> int:
        """Trials still to propose: 0 once either budget is spent."""
        if self.minutes is not None and spent_s >= 60 * self.minutes:
            return 0
        return max(0, self.trials - sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished()))


def check_arguments(max_drop: float, trials: int, objective: str, minutes: float | None = None) -> None:
    """Refuse bad search settings before any data is read or executor started."""
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be >= 0 percentage points of validation accuracy, got {max_drop}")
    if trials < 1:
        raise ConfigError(f"--budget-trials must be at least 1, got {trials}")
    if minutes is not None and not minutes > 0:
        raise ConfigError(f"--budget-minutes must be > 0, got {minutes}; leave it out for no time limit")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown --objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / STUDY_DB).resolve()}"


def study_name(cfg: RunConfig, max_drop: float) -> str:
    """One study per (data, model, training, seed, budget, search space version): machines asking the same
    join it, and a size and a latency search share it (the objective only picks the winner). The data file's
    path is left out, so machines holding the same data at different paths still join."""
    shared = cfg.model_dump(mode="json", exclude={"variants", "seeds"})
    shared["data"].pop("path", None)
    key = config_key({**shared, "seed": cfg.seeds[0], "max_drop": max_drop, "space": SPACE_VERSION})
    return f"modelshrink-search-v{SPACE_VERSION}-{key}"


def search(
    cfg: RunConfig, out: Path, max_drop: float, trials: int, objective: str = "size",
    executor: Executor | None = None, jobs: int = 1, log: Callable[[str], None] = print, storage: str | None = None,
    minutes: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the search and return its summary (also written to search.json): baseline, trials, the fronts
    per objective (validation only, test accuracy reported), Optuna's Pareto set and the winner."""
    t0 = time.monotonic()
    check_arguments(max_drop, trials, objective, minutes)
    _check_storage(storage)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed, budget = cfg.seeds[0], Budget(trials, minutes)
    executor = executor if executor is not None else Executor()
    if type(executor) is Executor:  # in-process: trials share fine-tuned prefixes across batches
        executor.prefixes = {}
    base_variant = VariantConfig(name="baseline")
    runner = Runner(cfg.model_copy(update={"variants": (base_variant,), "seeds": (seed,)}), out, log=log)
    data = runner.prepare()
    Path(out).mkdir(parents=True, exist_ok=True)  # the default storage's home; a bad URL fails before training
    study = _study(optuna, storage or default_storage(out), study_name(cfg, max_drop), seed)
    spent_before = float(study.user_attrs.get("seconds", 0.0))

    def run(variants: list[VariantConfig]) -> dict[str, dict[str, Any]]:
        r = Runner(cfg.model_copy(update={"variants": (base_variant, *variants), "seeds": (seed,)}), out, log=log)
        r.progress = runner.progress
        return {row["variant"]: row for row in r.run(data, executor) if row["seed"] == seed}

    known = run([])  # the baseline, and every row an earlier search left in the store
    base_row = known["baseline"]
    base_fig = search_figures(base_row)
    if base_fig is None:
        raise ConfigError(f"the baseline failed, nothing to compare with: {base_row.get('error')}")
    base = Trial(-1, "baseline", {}, "ok", base_fig)
    log(f"baseline: val acc {base_fig['val_accuracy']:.4f}, {base_fig['bytes']:,} bytes ({base_fig['file']}), "
        f"{base_fig['ms_b1']:.3f} ms at batch 1, {base_fig['ms_b256']:.3f} ms at batch 256")  # fmt: skip
    while (left := budget.left(study, spent_before + time.monotonic() - t0)) > 0:
        asked = [study.ask() for _ in range(min(max(1, jobs), left))]
        proposals = [propose(t) for t in asked]
        before = {n: (known[n]["key"], known[n]["status"]) for n, _, _ in proposals if n in known}
        # The runner skips a row already in the store under the same key: a repeated pipeline is not rerun.
        known.update(run([VariantConfig.model_validate({"name": n, "steps": s}) for n, s in
                          {n: s for n, s, _ in proposals}.items()]))  # fmt: skip
        for ot, (name, _, params) in zip(asked, proposals, strict=True):
            row, reused = known[name], before.get(name) == (known[name]["key"], "ok")
            t = Trial(ot.number, name, params, row["status"], search_figures(row) or {}, row.get("error"), reused)
            _tell(study, ot, t, base, max_drop)
            log(t.describe(base))
        study.set_user_attr("seconds", spent_before + time.monotonic() - t0)
    result = summary(base, [Trial.from_study(ft) for ft in study.get_trials(deepcopy=False)],
                     [Trial.from_study(ft) for ft in study.best_trials], objective, max_drop)  # fmt: skip
    spent = spent_before + time.monotonic() - t0
    study.set_user_attr("seconds", spent)  # a run that proposed nothing (budget spent on the baseline) counts too
    result.update(seed=seed, study=study.study_name, budget_trials=trials, budget_minutes=minutes,
                  minutes_spent=round(spent / 60, 2), stages={k: v for k, v in searched_kinds().items()})  # fmt: skip
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

    # TPE handles several objectives (MOTPE) and, through Trial.set_constraint, the accuracy budget.
    sampler = optuna.samplers.TPESampler(seed=seed)
    directions = ["minimize"] * (len(STUDY_VALUES) - 1) + ["maximize"]
    try:
        return optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                   load_if_exists=True)  # fmt: skip
    except (ValueError, ImportError, SQLAlchemyError) as err:  # a malformed URL, a missing driver, no server
        raise ConfigError(
            f"cannot open --storage {storage!r}: {err}; pass an RDB URL such as sqlite:///search.db"
        ) from err


def _tell(study: Any, ot: Any, t: Trial, base: Trial, max_drop: float) -> None:
    """Record a trial: its figures as user attributes too, so a study alone rebuilds the result (other machines)."""
    import optuna

    ot.set_user_attr("variant", t.variant)
    if not t.figures:
        ot.set_user_attr("error", str(t.error))
        study.tell(ot, state=optuna.trial.TrialState.FAIL)
        return
    ot.set_user_attr("figures", t.figures)
    ot.set_user_attr("reused", t.reused)
    drop = 100 * (base.figures["val_accuracy"] - t.figures["val_accuracy"])
    ot.set_constraint("accuracy_drop", drop - max_drop)  # <= 0: within the budget
    study.tell(ot, [t.figures[k] for k in STUDY_VALUES])
