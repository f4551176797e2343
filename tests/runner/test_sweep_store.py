"""The store refuses foreign or corrupt databases untouched; columns are queryable; a redefined
variant gets new rows and its old ones are kept as superseded."""

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.cli import main
from modelshrink.config import parse_config
from modelshrink.errors import ArtifactError
from modelshrink.runner.run import Runner
from modelshrink.store import ResultStore


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE invoices (id INTEGER, amount REAL)")
        con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.close()


def test_foreign_and_corrupt_databases_are_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "f" / "results.sqlite"
    foreign.parent.mkdir()
    _foreign(foreign)
    corrupt = tmp_path / "c" / "results.sqlite"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"this is not a database at all" * 100)
    truncated = tmp_path / "t" / "results.sqlite"
    truncated.parent.mkdir()
    with ResultStore(tmp_path / "good.sqlite") as store:
        store.put("k", "baseline", 0, "ok", {"variant": {"name": "baseline"}}, {"test_accuracy": 0.5})
    truncated.write_bytes((tmp_path / "good.sqlite").read_bytes()[:5000])  # header intact, pages cut off
    for path, match in ((foreign, "another program"), (corrupt, "not an SQLite database"),
                        (truncated, "not a readable modelshrink results store")):  # fmt: skip
        before = path.read_bytes()
        with pytest.raises(ArtifactError, match=match):
            ResultStore(path)
        assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["results.sqlite"]


def test_cli_refuses_a_foreign_store_before_writing(
    sweep: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    _foreign(out / "results.sqlite")
    before = (out / "results.sqlite").read_bytes()
    csv = sweep.config(tmp_path)["data"]["path"]
    assert main(["export", str(out), "--format", "csv"]) == 2
    assert "another program" in capsys.readouterr().err
    assert main(["run", "--task", "csv", "--data", csv, "--epochs", "1", "--out", str(out)]) == 2
    assert "another program" in capsys.readouterr().err
    assert (out / "results.sqlite").read_bytes() == before and sorted(p.name for p in out.iterdir()) == [
        "results.sqlite"
    ]


def test_columns_are_queryable_and_ok_rows_never_replaced(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    cfg = {"variant": {"name": "b", "steps": []}}
    with ResultStore(db) as store:
        store.put("k1", "b", 0, "failed", cfg, {"error": "boom", "wall_s": 1.5, "git_sha": "abc"})
        store.put("k1", "b", 0, "ok", cfg, {"test_accuracy": 0.75, "file_bytes": 1234, "wall_s": 2.0})  # the retry
        store.put("k1", "b", 0, "ok", cfg, {"test_accuracy": 0.1, "file_bytes": 1, "wall_s": 9.0})  # never replaces
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT status, test_accuracy, file_bytes, wall_s, error FROM results").fetchall()
        meta = dict(con.execute("SELECT name, value FROM meta").fetchall())
    assert rows == [("ok", 0.75, 1234, 2.0, None)]
    assert meta["app"] == "modelshrink" and meta["schema_version"] == "2"


def test_redefined_variant_gets_new_rows_old_ones_kept(
    sweep: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = lambda _m: None  # noqa: E731
    raw = sweep.config(tmp_path, variants=[sweep.VARIANTS[0], sweep.VARIANTS[3]], seeds=(0,))
    Runner(parse_config(raw), tmp_path / "o", log=quiet).run()
    changed = [
        sweep.VARIANTS[0],
        {"name": "clustered", "steps": [{"kind": "cluster.kmeans", "clusters": 8, "epochs": 0}]},
    ]
    rows = Runner(parse_config({**raw, "variants": changed}), tmp_path / "o", log=quiet).run()
    assert len(rows) == 2 and not any(r["superseded"] for r in rows)
    clustered = next(r for r in rows if r["variant"] == "clustered")
    assert clustered["config"]["variant"]["steps"][0]["clusters"] == 8
    with ResultStore(tmp_path / "o" / "results.sqlite") as store:
        every = store.rows(include_superseded=True)
    old = [r for r in every if r["superseded"]]
    assert len(every) == 3 and [r["config"]["variant"]["steps"][0]["clusters"] for r in old] == [4]
    # The exports leave the superseded row out.
    assert main(["export", str(tmp_path / "o"), "--format", "json", "-o", "-"]) == 0
    assert capsys.readouterr().out.count('"variant": "clustered"') == 1
