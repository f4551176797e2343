"""The results store: SQLite, one row per (variant, seed), committed as each finishes.

An interrupted run resumes from it and loses nothing; CSV/JSON/Markdown are exports of it.
Rows hold JSON text only (never pickle or repr), so anyone can read the store safely. What a
user filters or sorts on (status, error, seed, accuracies, bytes, latency, versions, git SHA,
machine, wall time) is also a proper column, so plain SQL can query it:

    sqlite3 runs/X/results.sqlite "SELECT variant, seed, test_accuracy, file_bytes FROM results WHERE status='ok'"
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from modelshrink.errors import ArtifactError

APP = "modelshrink"
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file

# Queryable columns copied from a row's result (the full result stays in the `result` JSON).
COLUMNS: dict[str, str] = {
    "error": "TEXT", "wall_s": "REAL", "test_accuracy": "REAL", "val_accuracy": "REAL", "file_bytes": "INTEGER",
    "latency_ms_p50": "REAL", "export_format": "TEXT", "torch": "TEXT", "onnxruntime": "TEXT", "python": "TEXT",
    "git_sha": "TEXT", "machine": "TEXT", "executor": "TEXT",
}  # fmt: skip

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,          -- hash of the row's resolved config (variant + seed + data + baseline)
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,          -- ok | failed
    config TEXT NOT NULL,          -- JSON of the resolved config
    result TEXT NOT NULL,          -- JSON of the measurements (or the error)
    created TEXT NOT NULL DEFAULT (datetime('now')),
    variant_key TEXT NOT NULL DEFAULT '',  -- hash of the variant's definition alone
    superseded INTEGER NOT NULL DEFAULT 0,  -- 1: the variant was redefined since; kept, left out of tables
    {", ".join(f"{c} {t}" for c, t in COLUMNS.items())}
);
"""


def config_key(config: dict[str, Any]) -> str:
    """Stable hash of a config's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _check_file(path: Path) -> None:
    """Refuse a file that is not an SQLite database before sqlite3 touches (or creates) anything."""
    if not path.exists():
        return
    if not path.is_file():
        raise ArtifactError(f"{str(path)!r} is not a file; pass a run folder written by modelshrink")
    with path.open("rb") as f:
        head = f.read(16)
    if head and head != SQLITE_MAGIC:
        raise ArtifactError(
            f"{str(path)!r} is not a modelshrink results store: not an SQLite database (corrupt, or another "
            "program's file); "
            "nothing was changed: use a new --out folder"
        )


class ResultStore:
    """Open (or create) a run folder's store; refuses a database that is corrupt or not ours."""

    def __init__(self, path: Path, readonly: bool = False, probe: bool = False) -> None:
        """`probe`: a read-only look that touches nothing beside the file (SQLite's immutable mode, no
        -wal/-shm files created), for checking a folder before a run refuses or starts; needs `readonly`."""
        self.path = Path(path)
        _check_file(self.path)
        if readonly:
            if not self.path.is_file():
                raise ArtifactError(f"{str(self.path)!r} does not exist; pass a folder written by `modelshrink run`")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro{'&immutable=1' if probe else ''}", uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
        try:
            self._open(readonly)
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise ArtifactError(
                f"{str(self.path)!r} is not a readable modelshrink results store ({err}); "
                "nothing was changed: use a new --out folder"
            ) from err
        except ArtifactError:
            self._db.close()
            raise

    def _open(self, readonly: bool) -> None:
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall()) if "meta" in tables else {}
        if tables and meta.get("app") != APP and "results" not in tables:
            raise ArtifactError(
                f"{str(self.path)!r} is an SQLite database of another program (tables: {', '.join(sorted(tables))}); "
                "nothing was changed: use a new --out folder"
            )
        if "results" in tables and "meta" in tables and meta.get("app") != APP:
            raise ArtifactError(f"{str(self.path)!r} is not a modelshrink results store; use a new --out folder")
        if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ArtifactError(
                f"{str(self.path)!r} was written by a newer modelshrink (store schema "
                f"{meta['schema_version']} > {SCHEMA_VERSION}); upgrade modelshrink"
            )
        if "results" in tables:  # ours: check the columns of an older store before adding new ones
            have = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
            if not {"key", "variant", "seed", "status", "config", "result"} <= have:
                raise ArtifactError(f"{str(self.path)!r} has a `results` table that modelshrink did not write")
        if readonly:
            return
        self._db.execute("PRAGMA journal_mode=WAL")  # a crash mid-write never corrupts committed rows
        with self._db:
            self._db.executescript(SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
            # Stores of schema 1 lack the queryable columns: add them (old rows keep NULL there).
            extra = {"variant_key": "TEXT NOT NULL DEFAULT ''", "superseded": "INTEGER NOT NULL DEFAULT 0", **COLUMNS}
            for col, typ in extra.items():
                if col not in have:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {col} {typ}")
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                [("app", APP), ("schema_version", str(SCHEMA_VERSION))],
            )

    def done(self, key: str) -> bool:
        row = self._db.execute("SELECT status FROM results WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] == "ok"

    def put(
        self, key: str, variant: str, seed: int, status: str, config: dict[str, Any], result: dict[str, Any]
    ) -> None:
        """Commit one finished row. A finished ("ok") row is never replaced; a failed one is, by its retry."""
        if self.done(key):
            return
        variant_key = config_key(config["variant"]) if isinstance(config.get("variant"), dict) else ""
        cols = {c: result.get(c) for c in COLUMNS}
        for c, v in cols.items():  # only scalars go into the typed columns
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                cols[c] = None
        names = ["key", "variant", "seed", "status", "config", "result", "variant_key", *cols]
        values = [key, variant, seed, status, json.dumps(config, sort_keys=True), json.dumps(result, sort_keys=True),
                  variant_key, *cols.values()]  # fmt: skip
        with self._db:  # one transaction per finished row
            self._db.execute(
                f"INSERT OR REPLACE INTO results ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values
            )

    def supersede(self, variant: str, variant_key: str) -> int:
        """Mark the rows of `variant` made under another definition as superseded (and those of
        this definition as current again); returns how many rows became superseded."""
        with self._db:
            cur = self._db.execute(
                "UPDATE results SET superseded = 1 WHERE variant = ? AND variant_key != ? AND superseded = 0",
                (variant, variant_key),
            )
            self._db.execute("UPDATE results SET superseded = 0 WHERE variant = ? AND variant_key = ?",
                             (variant, variant_key))  # fmt: skip
        return cur.rowcount

    def rows(self, include_superseded: bool = False) -> list[dict[str, Any]]:
        """Every row as {variant, seed, status, key, config, superseded, **result}, in insertion order."""
        out = []
        have = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
        flag = "superseded" if "superseded" in have else "0"  # a schema-1 store opened read-only
        where = "" if include_superseded else f"WHERE {flag} = 0"
        for key, variant, seed, status, config, result, superseded in self._db.execute(
            f"SELECT key, variant, seed, status, config, result, {flag} FROM results {where} ORDER BY rowid"
        ):
            out.append({"key": key, "variant": variant, "seed": seed, "status": status,
                        "config": json.loads(config), "superseded": bool(superseded), **json.loads(result)})  # fmt: skip
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
