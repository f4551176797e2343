"""Search under an accuracy budget: trials are rows of the store; the winner is chosen on validation."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.cli import main
from modelshrink.store import ResultStore


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
