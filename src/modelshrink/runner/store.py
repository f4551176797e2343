"""The results store: SQLite, one row per (variant, seed), committed as each finishes.

An interrupted run resumes from it and loses nothing; CSV/JSON/Markdown are exports of it.
Rows hold JSON text only (never pickle or repr), so anyone can read the store safely.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from modelshrink.errors import ArtifactError

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,          -- hash of the row's resolved config (variant + seed + data + baseline)
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,          -- ok | failed
    config TEXT NOT NULL,          -- JSON of the resolved config
    result TEXT NOT NULL,          -- JSON of the measurements (or the error)
    created TEXT NOT NULL DEFAULT (datetime('now'))
);
"""


def config_key(config: dict[str, Any]) -> str:
    """Stable hash of a config's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # a crash mid-write never corrupts committed rows
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise ArtifactError(
                f"{str(self.path)!r} is not a modelshrink results store ({err}); use another folder"
            ) from err

    def done(self, key: str) -> bool:
        row = self._db.execute("SELECT status FROM results WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] == "ok"

    def put(
        self, key: str, variant: str, seed: int, status: str, config: dict[str, Any], result: dict[str, Any]
    ) -> None:
        with self._db:  # one transaction per finished row
            self._db.execute(
                "INSERT OR REPLACE INTO results (key, variant, seed, status, config, result) VALUES (?, ?, ?, ?, ?, ?)",
                (key, variant, seed, status, json.dumps(config, sort_keys=True), json.dumps(result, sort_keys=True)),
            )

    def rows(self) -> list[dict[str, Any]]:
        """Every row as {variant, seed, status, key, config, **result}, in insertion order."""
        out = []
        for key, variant, seed, status, config, result in self._db.execute(
            "SELECT key, variant, seed, status, config, result FROM results ORDER BY rowid"
        ):
            out.append({"key": key, "variant": variant, "seed": seed, "status": status,
                        "config": json.loads(config), **json.loads(result)})  # fmt: skip
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
