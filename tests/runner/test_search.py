"""Search over every technique: trials are rows of the store; fronts are chosen on validation only."""

import json
import random
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import optuna
import pytest

import modelshrink.runner.search as search_mod
from modelshrink.cli import main
from modelshrink.runner.pipeline import Pipeline
from modelshrink.runner.search import propose, searched_kinds
from modelshrink.runner.search_front import OBJECTIVES, Trial, fronts, summary
from modelshrink.store import ResultStore
from modelshrink.techniques import TECHNIQUES, TechniqueConfig, TechniqueResult
from modelshrink.techniques.base import SEARCH_STAGES, SearchStage, SearchTrial, Technique

OFF = {"distill": False, "structured": "none", "cluster": False}
PRUNE_INT8 = {**OFF, "prune": True, "final_sparsity": 0.5, "quant": "quant.int8_dynamic"}
PRUNE_FP16 = {**PRUNE_INT8, "quant": "quant.fp16"}  # shares the fine-tuned prune prefix of PRUNE_INT8
STRUCT = {**OFF, "structured": "prune.structured", "prune.structured.unit_sparsity": 0.5,
          "prune.structured.embed_dim_sparsity": 0.0, "prune.structured.vocab_keep": None,
          "prune.structured.epochs": 2, "prune": False,
          "quant": "none"}  # fmt: skip


def _front_is_exact(front: list[dict[str, Any]], points: list[dict[str, Any]]) -> None:
    """No front point is dominated (cost down, validation accuracy up); every other point is dominated by one."""
    key = {id(p): (p["cost"], p["val_accuracy"]) for p in points}

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    on = [(p["cost"], p["val_accuracy"]) for p in front]
    assert not any(dominates(a, b) for a in on for b in on)
    for p in points:
        if (p["cost"], p["val_accuracy"]) not in on:
            assert any(dominates(a, key[id(p)]) for a in on), p["variant"]


def test_search_fronts_budgets_resume_and_shared_prefixes(
    sweep: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c.yaml").write_text(
        "model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n"
    )
    csv = sweep.config(tmp_path)["data"]["path"]
    out = tmp_path / "s"
    queue: list[dict[str, Any]] = [PRUNE_INT8, PRUNE_FP16, STRUCT]
    open_study = search_mod._study

    def enqueued(*args: Any) -> Any:  # the pipelines this test needs, proposed through the study itself
        study = open_study(*args)
        for params in queue:
            study.enqueue_trial(params)
        queue.clear()
        return study

    monkeypatch.setattr(search_mod, "_study", enqueued)
    applied: list[str] = []
    apply = Pipeline._apply
    monkeypatch.setattr(Pipeline, "_apply", lambda self, *a: applied.append(a[4].kind) or apply(self, *a))
    argv = ["search", "--max-drop", "2.0", "--budget-trials", "3", "--task", "csv", "--data", csv,
            "--config", str(tmp_path / "c.yaml"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().err
    assert "front: bytes vs validation accuracy (size)" in printed and "winner (within 2.0 pp)" in printed
    res = json.loads((out / "search.json").read_text())
    assert [t["variant"] for t in res["trials"]] == ["search-prune0.5+int8_dynamic", "search-prune0.5+fp16",
                                                    "search-struct-u0.5"]  # fmt: skip
    # Trials one at a time (one per batch), yet the second reused the first one's fine-tuned prune step.
    assert applied.count("prune.magnitude") == 1 and applied.count("prune.structured") == 1
    ok = [t for t in res["trials"] if t["status"] == "ok"]
    assert len(ok) == 3
    with ResultStore(out / "results.sqlite") as store:
        rows = {r["variant"]: r for r in store.rows()}
    for objective, (cost, val, test) in OBJECTIVES.items():
        points = [{**t, "cost": t["figures"][cost], "val_accuracy": t["figures"][val]} for t in ok]
        points.append({**res["baseline"], "cost": res["baseline"]["figures"][cost],
                       "val_accuracy": res["baseline"]["figures"][val]})  # fmt: skip
        _front_is_exact(res["fronts"][objective], points)
        for p in res["fronts"][objective]:  # each front point's test accuracy, as measured from its file
            row = rows[p["variant"]]
            measured = row["compact_test_accuracy"] if p["figures"]["file"] == "compact" else row["test_accuracy"]
            assert p["test_accuracy"] == (measured if test == "test_accuracy" else row["test_accuracy"])
    winner = res["winner"]
    assert winner["drop_pp"] <= 2.0 and winner["variant"] in {t["variant"] for t in res["frontier"]}
    assert all(winner["cost"] <= t["cost"] for t in res["frontier"] if t["feasible"])

    # Resume: the same pipeline proposed again (enqueued) is read from the store, not recomputed.
    queue.append(PRUNE_INT8)
    before = rows["search-prune0.5+int8_dynamic"]
    applied.clear()
    argv[argv.index("--budget-trials") + 1] = "4"
    assert main(argv) == 0
    again = json.loads((out / "search.json").read_text())
    assert [t["variant"] for t in again["trials"]] == [t["variant"] for t in res["trials"]] + [
        res["trials"][0]["variant"]
    ]
    assert again["trials"][3]["reused"] and applied == [] and "(from the store)" in capsys.readouterr().err
    with ResultStore(out / "results.sqlite") as store:
        after = {r["variant"]: r for r in store.rows()}
    assert len(after) == len(rows) and after["search-prune0.5+int8_dynamic"] == before

    # --budget-minutes: the study has already spent more than 0.001 minutes, so nothing more is proposed.
    argv[argv.index("--budget-trials") + 1] = "10"
    assert main([*argv, "--budget-minutes", "0.001"]) == 0
    assert len(json.loads((out / "search.json").read_text())["trials"]) == 4 and applied == []


def _trial(i: int, rng: random.Random) -> Trial:
    fig = {"bytes": rng.choice([1000, 2000, 3000, 4000]), "ms_b1": rng.random(), "ms_b256": rng.random(),
           "val_accuracy": rng.choice([0.7, 0.8, 0.9]), "test_accuracy": rng.random(), "file": "onnx"}  # fmt: skip
    fig.update(onnx_val_accuracy=fig["val_accuracy"], onnx_test_accuracy=rng.random())
    return Trial(i, f"search-{i}", {}, "ok", fig)


def test_fronts_and_winner_never_read_test_accuracy() -> None:
    rng = random.Random(0)
    base = Trial(-1, "baseline", {}, "ok", {**_trial(0, rng).figures, "val_accuracy": 0.9, "onnx_val_accuracy": 0.9})
    done = [_trial(i, rng) for i in range(40)]
    first = summary(base, done, [], "size", 10.0)
    for t in [base, *done]:  # test accuracies scrambled: the same fronts and winner
        t.figures.update(test_accuracy=rng.random(), onnx_test_accuracy=rng.random())
    second = summary(base, done, [], "size", 10.0)
    for objective in OBJECTIVES:
        assert [t["variant"] for t in first["fronts"][objective]] == [t["variant"] for t in second["fronts"][objective]]
    assert first["winner"]["variant"] == second["winner"]["variant"]
    assert first["winner"]["drop_pp"] <= 10.0
    front = fronts(base, done)["size"]
    assert [t.figures["bytes"] for t in front] == sorted(t.figures["bytes"] for t in front)


def test_search_refuses_bad_budgets_and_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["search", "--max-drop", "1", "--task", "digits", "--out", str(tmp_path / "s")]
    assert main([*base, "--storage", "not a url"]) == 2
    assert "--storage 'not a url' is not a database URL" in capsys.readouterr().err
    assert main([*base, "--budget-minutes", "0"]) == 2
    assert "--budget-minutes must be > 0, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_every_searched_technique_has_a_stage_in_pipeline_order() -> None:
    assert tuple(searched_kinds()) == SEARCH_STAGES == ("distill", "structured", "prune", "cluster", "quant")
    assert searched_kinds() == {
        "distill": ["distill.kd"],
        "structured": ["lowrank", "prune.nm", "prune.structured"],
        "prune": ["prune.magnitude"],
        "cluster": ["cluster.kmeans"],
        "quant": ["quant.fp16", "quant.int8_dynamic", "quant.int8_static", "quant.qat"],
    }
    # The names and choices search used before distill/structured existed are unchanged (a resumed study stays valid).
    params = {"distill": True, "student_embed_dim": 8, "student_hidden": 32, "structured": "lowrank",
              "lowrank.energy": 0.9, "prune": True, "final_sparsity": 0.5, "cluster": True, "clusters": 16,
              "quant": "quant.qat"}  # fmt: skip
    name, steps, got = propose(optuna.trial.FixedTrial(params))
    assert name == "search-kd-e8h32+lowrank0.9+prune0.5+cluster16+qat" and got == params
    assert [s["kind"] for s in steps] == ["distill.kd", "lowrank", "prune.magnitude", "cluster.kmeans", "quant.qat"]
    assert steps[0]["student"] == {"embed_dim": 8, "hidden": 32}
    # Later steps keep what earlier ones established: the zeros of pruning, the shared values of clustering.
    assert steps[3] == {"kind": "cluster.kmeans", "clusters": 16, "preserve_sparsity": True}
    assert steps[4] == {"kind": "quant.qat", "preserve_clusters": True, "preserve_sparsity": True}
    no_prune = propose(optuna.trial.FixedTrial({**params, "prune": False, "structured": "none"}))[1]
    assert no_prune[1] == {"kind": "cluster.kmeans", "clusters": 16} and "preserve_sparsity" not in no_prune[2]
    fp32 = {**OFF, "prune": False, "quant": "none"}
    assert propose(optuna.trial.FixedTrial(fp32)) == ("search-fp32", [], fp32)


class _LastChoice:
    """A trial that answers every question with its last choice (or the float range's top)."""

    params: ClassVar[dict[str, Any]] = {}

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None) -> float:
        return high

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[-1]


@pytest.mark.parametrize("kind", sorted(TECHNIQUES))
def test_a_technique_is_searched_exactly_when_it_has_a_stage(kind: str) -> None:
    config_cls = TECHNIQUES[kind].config_cls
    searched = any(kind in kinds for kinds in searched_kinds().values())
    assert searched == (config_cls.search_stage is not None)
    step = config_cls.search_space(_LastChoice(), "")
    assert step is not None or not searched  # a searched technique declares its space
    if step is not None:  # a valid step of this very technique (declared, maybe for later), with a label
        cfg = config_cls.model_validate(step)
        assert cfg.kind == kind and cfg.search_label()


def test_same_seed_proposes_the_same_pipelines() -> None:
    def names() -> list[str]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), directions=["minimize", "maximize"])
        out = []
        for _ in range(6):
            trial = study.ask()
            out.append(propose(trial)[0])
            study.tell(trial, [1.0, 1.0])
        return out

    first = names()
    assert first == names() and len(set(first)) > 1


class _ShareConfig(TechniqueConfig):
    kind: Literal["cluster.test_share"] = "cluster.test_share"
    levels: int = 4
    search_stage: ClassVar[SearchStage | None] = "cluster"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        return {"kind": "cluster.test_share", "levels": trial.suggest_categorical(f"{prefix}levels", [2, 4])}


def test_a_second_technique_in_a_stage_becomes_a_choice_with_its_own_names(monkeypatch: pytest.MonkeyPatch) -> None:
    share = Technique("cluster.test_share", _ShareConfig, lambda m, c, x: TechniqueResult(m), "test")
    monkeypatch.setitem(TECHNIQUES, "cluster.test_share", share)  # this test only
    trial = optuna.trial.FixedTrial({**OFF, "prune": False, "cluster": "cluster.test_share",
                                     "cluster.test_share.levels": 2, "quant": "none"})  # fmt: skip
    name, steps, _ = propose(trial)
    assert name == "search-test_share" and steps == [{"kind": "cluster.test_share", "levels": 2}]
