"""Search under an accuracy budget: trials are rows of the store; the winner is chosen on validation."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import optuna
import pytest

from modelshrink.cli import main
from modelshrink.runner.search import propose, searched_kinds
from modelshrink.store import ResultStore
from modelshrink.techniques import TECHNIQUES, TechniqueConfig, TechniqueResult
from modelshrink.techniques.base import SearchStage, SearchTrial, Technique


def test_search_finds_a_winner_within_the_budget(
    sweep: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.yaml").write_text(
        "model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n"
    )
    csv = sweep.config(tmp_path)["data"]["path"]
    out = tmp_path / "s"
    argv = ["search", "--max-drop", "2.0", "--budget-trials", "3", "--task", "csv", "--data", csv,
            "--config", str(tmp_path / "c.yaml"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().err
    assert "frontier (file_bytes vs validation accuracy)" in printed and "winner (within 2.0 pp)" in printed
    res = json.loads((out / "search.json").read_text())
    assert len(res["trials"]) == 3
    winner, base = res["winner"], res["baseline"]
    assert winner["drop_pp"] <= 2.0 and winner["cost"] <= base["cost"]
    ok = [t for t in res["trials"] if t["cost"] is not None and t["feasible"]]
    assert all(winner["cost"] <= t["cost"] for t in ok)  # the smallest file within the budget
    assert winner["variant"] in {t["variant"] for t in res["frontier"]}
    with ResultStore(out / "results.sqlite") as store:
        rows = {r["variant"]: r for r in store.rows()}
    assert set(rows) >= {"baseline", *(t["variant"] for t in res["trials"])}
    assert rows[winner["variant"]]["test_accuracy"] == winner["test_accuracy"]
    # Two objectives: Optuna's Pareto set of the feasible trials, none dominated by another.
    best = [(t["cost"], t["val_accuracy"]) for t in res["best_trials"]]
    assert best and all(t["feasible"] for t in res["best_trials"])
    assert not any(c2 <= c1 and a2 >= a1 and (c2, a2) != (c1, a1) for c1, a1 in best for c2, a2 in best)

    # The study lives in the run folder's search.db: a bigger budget resumes it, the 3 trials are not rerun.
    study = optuna.load_study(study_name=res["study"], storage=f"sqlite:///{out / 'search.db'}")
    assert len(study.trials) == 3 and len(study.directions) == 2
    argv[argv.index("--budget-trials") + 1] = "4"
    assert main(argv) == 0
    again = json.loads((out / "search.json").read_text())
    assert [t["variant"] for t in again["trials"][:3]] == [t["variant"] for t in res["trials"]]
    assert len(again["trials"]) == 4 and "trial 3:" in capsys.readouterr().err


def test_search_refuses_a_storage_that_is_no_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--max-drop", "1", "--storage", "not a url", "--task", "digits", "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "--storage 'not a url' is not a database URL" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_search_spaces_come_from_the_technique_configs() -> None:
    assert searched_kinds() == {
        "prune": ["prune.magnitude"],
        "cluster": ["cluster.kmeans"],
        "quant": ["quant.fp16", "quant.int8_dynamic", "quant.int8_static", "quant.qat"],
    }
    params = {"prune": True, "final_sparsity": 0.5, "cluster": True, "clusters": 16, "quant": "quant.qat"}
    name, steps, got = propose(optuna.trial.FixedTrial(params))
    assert name == "search-prune0.5+cluster16+qat" and got == params
    assert steps == [{"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5},
                     {"kind": "cluster.kmeans", "clusters": 16}, {"kind": "quant.qat"}]  # fmt: skip
    fp32 = optuna.trial.FixedTrial({"prune": False, "cluster": False, "quant": "none"})
    assert propose(fp32) == ("search-fp32", [], {"prune": False, "cluster": False, "quant": "none"})


@pytest.mark.parametrize("kind", sorted(TECHNIQUES))
def test_a_technique_is_searched_exactly_when_it_has_a_stage(kind: str) -> None:
    config_cls = TECHNIQUES[kind].config_cls
    trial = optuna.trial.FixedTrial({"final_sparsity": 0.4, "clusters": 8})
    step = config_cls.search_space(trial, "")
    assert (step is None) == (config_cls.search_stage is None)
    if step is not None:  # a valid step of this very technique
        assert config_cls.model_validate(step).kind == kind


def test_same_seed_proposes_the_same_pipelines_as_before() -> None:
    # The first proposals of TPE on seed 0 with the space search had before the spaces moved to
    # the configs: same parameter names and order of suggestions, same pipelines.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    names = []
    for _ in range(9):
        trial = study.ask()
        names.append(propose(trial)[0])
        study.tell(trial, 1.0)
    assert names == [
        "search-prune0.65+int8_static", "search-cluster32+fp16", "search-prune0.3+int8_dynamic",
        "search-prune0.65+cluster32+fp16", "search-prune0.55+int8_dynamic", "search-cluster32+qat",
        "search-prune0.2+int8_static", "search-cluster16+fp16", "search-prune0.2+fp16",
    ]  # fmt: skip


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
    trial = optuna.trial.FixedTrial({"prune": False, "cluster": "cluster.test_share",
                                     "cluster.test_share.levels": 2, "quant": "none"})  # fmt: skip
    name, steps, _ = propose(trial)
    assert name == "search-test_share" and steps == [{"kind": "cluster.test_share", "levels": 2}]
