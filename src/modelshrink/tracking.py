"""Results in MLflow (`modelshrink run --mlflow [URI]`): what the results store holds, mirrored.

One parent run per run folder, one child run per (variant, seed) row of its store: the row's resolved config
as params, every numeric figure it measured as metrics, its technique chain and format as tags, its files
(ONNX, compact, metrics.json) as artifacts; summary.md and report.html go on the parent. Everything is logged
from the store's committed rows, never from a row in flight, so MLflow never holds a row the store lacks.
A child is found again by the tag holding the row's key: syncing twice (a resumed run) logs nothing twice,
and a child a crash left half-logged (no `modelshrink.complete` tag) is deleted and logged again.

MLflow is an optional extra (`pip install 'modelshrink[mlflow]'`) imported only here, only when asked for.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from modelshrink.errors import ConfigError

EXPERIMENT = "modelshrink"
LOCAL = "local"  # --mlflow with no URI: an SQLite store in the run folder
ROW_KEY_TAG = "modelshrink.row_key"  # the store's key of the row a child run mirrors
FOLDER_TAG = "modelshrink.folder"  # the run folder a parent run mirrors
COMPLETE_TAG = "modelshrink.complete"  # set last: a child without it was cut short and is logged again
ARTIFACT_SUFFIXES = (".onnx", ".msz")  # a row's model files; its metrics.json is logged too
PARENT_FILES = ("summary.md", "report.html")
PARAM_VALUE_MAX = 6000  # MLflow's limit on one param's value (since 2.x); longer values are cut, marked "…"
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow accepts these in metric and param names


def tracking_uri(uri: str, out: Path) -> str:
    """The URI to log to: `local` means an SQLite database in the run folder (MLflow's file store is deprecated)."""
    return f"sqlite:///{(Path(out) / 'mlflow.db').resolve()}" if uri == LOCAL else uri


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of nested dicts; lists stay whole (one param or none)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def row_metrics(row: dict[str, Any]) -> dict[str, float]:
    """Every finite numeric figure a row measured (bools and the row's own seed are not measurements)."""
    skip = {"key", "variant", "seed", "status", "config", "superseded"}
    out = {}
    for key, value in flatten({k: v for k, v in row.items() if k not in skip}):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        out[_clean(key)] = float(value)
    return out


def row_params(config: dict[str, Any]) -> dict[str, str]:
    """The row's resolved config as flat string params (lists and None as JSON)."""
    out = {}
    for key, value in flatten(config):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out[_clean(key)] = text if len(text) <= PARAM_VALUE_MAX else text[: PARAM_VALUE_MAX - 1] + "…"
    return out


def row_tags(row: dict[str, Any]) -> dict[str, str]:
    steps = row.get("config", {}).get("variant", {}).get("steps", [])
    tags = {ROW_KEY_TAG: row["key"], "modelshrink.variant": row["variant"], "modelshrink.seed": str(row["seed"]),
            "modelshrink.status": row["status"],
            "modelshrink.techniques": " → ".join(s.get("kind", "?") for s in steps) or "none"}  # fmt: skip
    if row.get("export_format"):
        tags["modelshrink.format"] = str(row["export_format"])
    if row.get("error"):
        tags["modelshrink.error"] = str(row["error"])[:PARAM_VALUE_MAX]
    return tags


def _clean(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", key)[:250]


class MlflowTracker:
    """Mirrors a run folder's store into MLflow; `sync` is idempotent, so it runs after every committed row."""

    def __init__(self, uri: str, out: Path) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError as err:
            raise ConfigError(
                "--mlflow needs MLflow, which is not installed: pip install 'modelshrink[mlflow]'"
            ) from err
        self.out = Path(out)
        self.uri = tracking_uri(uri, self.out)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(uri == LOCAL)
        self.parent_id = self._parent()
        self.logged = self._children()

    def _experiment(self, local: bool) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        # A local store keeps its artifacts in the run folder too (MLflow's default is ./mlruns of the cwd).
        location = (self.out / "mlartifacts").resolve().as_uri() if local else None
        return str(self.client.create_experiment(EXPERIMENT, artifact_location=location))

    def _parent(self) -> str:
        folder = str(self.out.resolve())
        found = self.client.search_runs([self.experiment_id], f"tags.`{FOLDER_TAG}` = '{_quote(folder)}'")
        if found:
            return str(found[0].info.run_id)
        run = self.client.create_run(self.experiment_id, run_name=self.out.name, tags={FOLDER_TAG: folder})
        return str(run.info.run_id)

    def _children(self) -> set[str]:
        """Row keys already logged in full; half-logged children (a crash mid-way) are deleted, to log again."""
        done = set()
        runs = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}'")
        for run in runs:
            key = run.data.tags.get(ROW_KEY_TAG)
            if key and run.data.tags.get(COMPLETE_TAG) == "1":
                done.add(key)
            else:
                self.client.delete_run(run.info.run_id)
        return done

    def sync(self, rows: Iterable[dict[str, Any]]) -> int:
        """Log each committed row not yet in MLflow; returns how many were logged."""
        n = 0
        for row in rows:
            if row["key"] not in self.logged and not row.get("superseded"):
                self._log_row(row)
                self.logged.add(row["key"])
                n += 1
        return n

    def _log_row(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        tags = {"mlflow.parentRunId": self.parent_id, **row_tags(row)}
        run_id = self.client.create_run(self.experiment_id, run_name=f"{row['variant']}-seed{row['seed']}",
                                        tags=tags).info.run_id  # fmt: skip
        params = [Param(k, v) for k, v in row_params(row.get("config", {})).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in row_metrics(row).items()]
        for i in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
        folder = self.out / "models" / f"{row['variant']}-seed{row['seed']}"
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.is_file() and (path.suffix in ARTIFACT_SUFFIXES or path.name == "metrics.json"):
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED" if row["status"] == "ok" else "FAILED")
        self.client.log_batch(run_id, tags=[RunTag(COMPLETE_TAG, "1")])

    def finish(self, paths: Iterable[Path]) -> None:
        """The report's files on the parent run, which ends FINISHED (logged again after each resume)."""
        for path in paths:
            if path.name in PARENT_FILES and path.is_file():
                self.client.log_artifact(self.parent_id, str(path))
        self.client.set_terminated(self.parent_id, "FINISHED")


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
