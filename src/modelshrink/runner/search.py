"""Search under an accuracy budget: the smallest (or fastest) model whose validation accuracy
stays within `max_drop` percentage points of the baseline's, over techniques and their settings.

Optuna's TPE sampler proposes pipelines (prune → cluster → quantize, each optional, with its
parameters); every proposal runs as an ordinary variant of a run folder, so each trial is a
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
from modelshrink.errors import ConfigError
from modelshrink.report.pareto import pareto_front
from modelshrink.runner.executors import Executor
from modelshrink.runner.run import Runner
from modelshrink.techniques import TECHNIQUES

OBJECTIVES = {"size": "file_bytes", "latency": "latency_ms_p50"}
CLUSTERS = (4, 8, 16, 32, 64)  # shared values per tensor: 2- to 6-bit indices


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


def _quant_kinds() -> list[str]:
    """Every registered quantization technique (they take no parameters the search must set)."""
    return sorted(k for k in TECHNIQUES if k.startswith("quant."))


def propose(trial: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """One pipeline from an Optuna trial: (name, steps, params). Names are unique per pipeline."""
    steps: list[dict[str, Any]] = []
    name: list[str] = []
    if trial.suggest_categorical("prune", [False, True]):
        # Steps of 0.05 keep the space finite, so a repeated proposal is found in the store.
        sparsity = round(trial.suggest_float("final_sparsity", 0.2, 0.95, step=0.05), 2)
        steps.append({"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": sparsity})
        name.append(f"prune{sparsity:g}")
    if trial.suggest_categorical("cluster", [False, True]):
        clusters = trial.suggest_categorical("clusters", list(CLUSTERS))
        steps.append({"kind": "cluster.kmeans", "clusters": clusters})
        name.append(f"cluster{clusters}")
    quant = trial.suggest_categorical("quant", ["none", *_quant_kinds()])
    if quant != "none":
        steps.append({"kind": quant})
        name.append(quant.removeprefix("quant."))
    return "search-" + ("+".join(name) or "fp32"), steps, dict(trial.params)


def search(
    cfg: RunConfig, out: Path, max_drop: float, trials: int, objective: str = "size",
    executor: Executor | None = None, jobs: int = 1, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Run the search and return {baseline, trials, frontier, winner} (also written to search.json)."""
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be >= 0 percentage points of validation accuracy, got {max_drop}")
    if trials < 1:
        raise ConfigError(f"--budget-trials must be at least 1, got {trials}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown --objective {objective!r}; known: {', '.join(OBJECTIVES)}")
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
            row = rows[name]
            t = Trial(ot.number, name, params, row["status"])
            if row["status"] != "ok" or row.get(cost_col) is None:
                study.tell(ot, state=optuna.trial.TrialState.FAIL)
            else:
                t.cost, t.val_accuracy, t.test_accuracy = (
                    float(row[cost_col]),
                    row["val_accuracy"],
                    row["test_accuracy"],
                )
                t.drop_pp = 100 * (base_val - row["val_accuracy"])
                t.feasible = t.drop_pp <= max_drop
                ot.set_constraint("accuracy_drop", t.drop_pp - max_drop)  # <= 0: within the budget
                study.tell(ot, t.cost)
            done.append(t)
            log(f"trial {t.number}: {name}: " + (f"{cost_col} {t.cost:,.3f}, val acc {t.val_accuracy:.4f} "
                f"(drop {t.drop_pp:+.2f} pp){'' if t.feasible else ', over budget'}" if t.cost is not None
                else f"failed: {row.get('error')}"))  # fmt: skip

    ok = [t for t in done if t.cost is not None]
    base_trial = Trial(-1, "baseline", {}, "ok", float(base[cost_col]), base_val, base["test_accuracy"], 0.0, True)
    candidates = [base_trial, *{t.variant: t for t in ok}.values()]  # a repeated pipeline counts once
    front = [candidates[i] for i in pareto_front([(t.cost, t.val_accuracy) for t in candidates])]  # type: ignore[misc]
    feasible = [t for t in candidates if t.feasible]
    winner = min(feasible, key=lambda t: (t.cost, -(t.val_accuracy or 0)))  # the baseline is always feasible
    result = {
        "objective": objective, "cost_column": cost_col, "max_drop_pp": max_drop, "seed": seed,
        "baseline": vars(base_trial), "trials": [vars(t) for t in done], "frontier": [vars(t) for t in front],
        "winner": vars(winner),
    }  # fmt: skip
    (Path(out) / "search.json").write_text(json.dumps(result, indent=1))
    return result
