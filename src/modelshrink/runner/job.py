"""The whole job, as `modelshrink run` and `modelshrink.compare` both run it: data → rows in the
store (on an executor, or the --onnx route) → report.html, figures and exports from the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress

from modelshrink.config import RunConfig
from modelshrink.data.tasks import TaskData, load_task
from modelshrink.models.builders import text_encoder
from modelshrink.report.html import write_report
from modelshrink.runner.executors import Executor
from modelshrink.runner.folder import check_writable
from modelshrink.runner.lock import folder_lock
from modelshrink.runner.onnx_input import check_onnx_input, run_onnx
from modelshrink.runner.pipeline import Log
from modelshrink.runner.run import Runner
from modelshrink.tracking import MlflowTracker


@dataclass
class JobResult:
    rows: list[dict[str, Any]]  # the store's rows, one per (variant, seed)
    out: Path  # the run folder
    paths: list[Path]  # report.html, summary.md, results.json/csv, figures

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def default_out(prefix: str = "") -> Path:
    """runs/<prefix><timestamp>: the run folder when none is given."""
    return Path("runs") / (prefix + datetime.now().strftime("%Y%m%d-%H%M%S"))


def prepare(
    cfg: RunConfig, out: Path, data: TaskData | None = None, onnx: Path | None = None, onnx_output: str | None = None
) -> TaskData:
    """Load the data (unless given) and check the model and the folder; raises before anything is written."""
    data = data if data is not None else load_task(cfg.data, text_encoder(cfg.model))
    if onnx is None:
        Runner(cfg, out).check(data)
    else:
        check_onnx_input(onnx, data, cfg.latency_threads, onnx_output)
        check_writable(out)
    return data


def run_job(
    cfg: RunConfig, out: Path, data: TaskData, executor: Executor | None = None, onnx: Path | None = None,
    progress: Progress | None = None, log: Log = print, onnx_output: str | None = None, mlflow: str | None = None,
) -> JobResult:  # fmt: skip
    """Run every unfinished row into `out`'s store, then write the report from the store.

    `onnx_output` names the --onnx file's scores output when it has several (default: found by shape).
    `mlflow`: a tracking URI (or "local": an SQLite store in `out`) that mirrors each row once it is committed."""
    tracker = MlflowTracker(mlflow, out) if mlflow is not None else None
    on_commit = tracker.sync if tracker is not None else None
    if onnx is not None:
        with folder_lock(out):
            rows = run_onnx(onnx, cfg, data, out, log=log, output=onnx_output)
    else:
        rows = Runner(cfg, out, progress, log).run(data, executor, on_commit)
    paths = write_report(out)
    if tracker is not None:
        n = tracker.sync(rows)  # rows committed before a crash, or by the --onnx route
        tracker.finish(paths)
        log(f"mlflow: {len(tracker.logged)} rows in {tracker.uri}" + (f" ({n} logged late)" if n else ""))
    return JobResult(rows, out, paths)
