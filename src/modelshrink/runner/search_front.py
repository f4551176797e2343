"""The search's result: trials, the Pareto front per objective (chosen on validation accuracy only)
and the winner within the accuracy budget; each front point's test accuracy is reported, never used."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelshrink.report.pareto import pareto_front

# objective → (cost figure, validation accuracy and test accuracy of the same file); see report.pareto.search_figures
OBJECTIVES: dict[str, tuple[str, str, str]] = {
    "size": ("bytes", "val_accuracy", "test_accuracy"),  # the deployable file: compact or ONNX, the smaller
    "latency": ("ms_b1", "onnx_val_accuracy", "onnx_test_accuracy"),  # the ONNX file, one input, 1 thread
    "latency256": ("ms_b256", "onnx_val_accuracy", "onnx_test_accuracy"),  # the ONNX file, batch 256, 1 thread
}
STUDY_VALUES = ("bytes", "ms_b1", "ms_b256", "val_accuracy")  # the study's objectives: three down, accuracy up


@dataclass
class Trial:
    number: int
    variant: str
    params: dict[str, Any]
    status: str
    figures: dict[str, Any] = field(default_factory=dict)  # report.pareto.search_figures; empty: failed
    error: str | None = None
    reused: bool = False  # read from the store: the same pipeline was measured before

    @classmethod
    def from_study(cls, ft: Any) -> Trial:
        """A finished Optuna trial back as a Trial (its figures are user attributes)."""
        figures = dict(ft.user_attrs.get("figures") or {}) if ft.values else {}
        return cls(ft.number, str(ft.user_attrs.get("variant", f"trial-{ft.number}")), dict(ft.params),
                   "ok" if figures else "failed", figures, ft.user_attrs.get("error"),
                   bool(ft.user_attrs.get("reused", False)))  # fmt: skip

    def drop_pp(self, base: Trial, objective: str) -> float:
        """Validation accuracy lost against the baseline's same kind of file, in percentage points."""
        val = OBJECTIVES[objective][1]
        return 100 * (base.figures[val] - self.figures[val])

    def entry(self, base: Trial, objective: str, max_drop: float) -> dict[str, Any]:
        """JSON of this trial for `objective`: cost, validation accuracy (chooses), test accuracy (reported)."""
        if not self.figures:
            return {"number": self.number, "variant": self.variant, "params": self.params, "status": self.status,
                    "error": self.error, "cost": None, "val_accuracy": None, "test_accuracy": None,
                    "drop_pp": None, "feasible": False}  # fmt: skip
        cost, val, test = OBJECTIVES[objective]
        drop = self.drop_pp(base, objective)
        return {"number": self.number, "variant": self.variant, "params": self.params, "status": self.status,
                "reused": self.reused, "cost": self.figures[cost], "val_accuracy": self.figures[val],
                "test_accuracy": self.figures.get(test), "drop_pp": drop, "feasible": drop <= max_drop,
                "figures": self.figures}  # fmt: skip

    def describe(self, base: Trial) -> str:
        if not self.figures:
            return f"trial {self.number}: {self.variant}: failed: {self.error}"
        f = self.figures
        return (f"trial {self.number}: {self.variant}: {f['bytes']:,} bytes ({f['file']}), {f['ms_b1']:.3f} / "
                f"{f['ms_b256']:.3f} ms (batch 1 / 256), val acc {f['val_accuracy']:.4f} "
                f"(drop {self.drop_pp(base, 'size'):+.2f} pp)" + (" (from the store)" if self.reused else ""))  # fmt: skip


def fronts(base: Trial, done: list[Trial]) -> dict[str, list[Trial]]:
    """Per objective, the non-dominated pipelines (cost down, validation accuracy up) of the baseline and every
    finished trial, by increasing cost. Reads no test accuracy: a front is chosen on validation alone."""
    ok = {t.variant: t for t in done if t.figures}  # a pipeline proposed twice counts once
    candidates = [base, *(t for name, t in ok.items() if name != base.variant)]
    out = {}
    for objective, (cost, val, _) in OBJECTIVES.items():
        points = [(float(t.figures[cost]), float(t.figures[val])) for t in candidates]
        out[objective] = [candidates[i] for i in pareto_front(points)]
    return out


def winner(front: list[Trial], base: Trial, objective: str, max_drop: float) -> Trial:
    """The cheapest point of `objective`'s front within the budget (the baseline always is); validation only."""
    cost, val, _ = OBJECTIVES[objective]
    feasible = [t for t in front if t.drop_pp(base, objective) <= max_drop] or [base]
    return min(feasible, key=lambda t: (t.figures[cost], -t.figures[val]))


def summary(base: Trial, done: list[Trial], best: list[Trial], objective: str, max_drop: float) -> dict[str, Any]:
    """search.json: every trial, the front of every objective, Optuna's Pareto set, the winner of `objective`."""
    by_objective = fronts(base, done)
    win = winner(by_objective[objective], base, objective, max_drop)
    return {
        "objective": objective, "cost_column": OBJECTIVES[objective][0], "max_drop_pp": max_drop,
        "baseline": base.entry(base, objective, max_drop),
        "trials": [t.entry(base, objective, max_drop) for t in done],
        "fronts": {o: [t.entry(base, o, max_drop) for t in f] for o, f in by_objective.items()},
        "frontier": [t.entry(base, objective, max_drop) for t in by_objective[objective]],
        "best_trials": [t.entry(base, objective, max_drop) for t in best if t.figures],  # Optuna's, 4 values
        "winner": win.entry(base, objective, max_drop),
    }  # fmt: skip


def front_table(result: dict[str, Any]) -> list[str]:
    """The printed fronts: one line per point of each objective's front, test accuracy reported last."""
    lines = []
    for objective, front in result["fronts"].items():
        cost = OBJECTIVES[objective][0]
        lines.append(f"front: {cost} vs validation accuracy ({objective})")
        for t in front:
            f = t["figures"]
            lines.append(f"  {t['variant']:46} {f['bytes']:>11,} B {f['file']:8} {f['ms_b1']:8.3f} ms/1 "
                         f"{f['ms_b256']:8.2f} ms/256  val {t['val_accuracy']:.4f} ({t['drop_pp']:+.2f} pp)  "
                         f"test {t['test_accuracy']:.4f}")  # fmt: skip
    return lines
