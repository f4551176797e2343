from pathlib import Path

import pytest

from modelshrink.cli import main
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.store import ResultStore, config_key


def test_key_is_canonical() -> None:
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_rows_survive_reopening(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put("k1", "baseline", 0, "ok", {"x": 1}, {"test_accuracy": 0.9})
        store.put("k2", "pruned", 0, "failed", {"x": 2}, {"error": "boom"})
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.done("k1") and not store.done("k2") and not store.done("k3")
        rows = store.rows()
    assert [(r["variant"], r["status"]) for r in rows] == [("baseline", "ok"), ("pruned", "failed")]
    assert rows[0]["test_accuracy"] == 0.9 and rows[1]["error"] == "boom"


def test_rerun_into_the_same_folder_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_synthetic_csv(tmp_path / "d.csv", 120)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n"
                   "variants: [{name: baseline, steps: []}, {name: b8, steps: [{kind: quant.int8_dynamic}]}]\n")  # fmt: skip
    argv = [
        "run",
        "--task",
        "csv",
        "--data",
        str(csv),
        "--config",
        str(cfg),
        "--seed",
        "0",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    with ResultStore(tmp_path / "o" / "results.sqlite") as store:
        first = store.rows()
    capsys.readouterr()
    assert main(argv) == 0
    assert "already in the store" in capsys.readouterr().err
    with ResultStore(tmp_path / "o" / "results.sqlite") as store:
        again = store.rows()
    assert [r["key"] for r in again] == [r["key"] for r in first] and len(first) == 2
    assert [r["wall_s"] for r in again] == [r["wall_s"] for r in first]  # not recomputed
