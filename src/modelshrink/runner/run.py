"""The main job's loop: which (variant, seed) rows are still to do, run them on an executor,
commit each row to the store as it finishes.

Running again into the same folder skips finished rows, so an interrupted run resumes. What
a row does is in runner/task.py (pipeline.py builds the model, measure.py measures its files);
where it runs, in runner/executors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import Progress

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData, load_task
from modelshrink.models.builders import check_model_fits, text_encoder
from modelshrink.runner.executors import Executor, RowTask
from modelshrink.runner.folder import RunFolder
from modelshrink.runner.lock import folder_lock
from modelshrink.runner.pipeline import Log
from modelshrink.runner.task import RowRunner
from modelshrink.store import ResultStore, config_key

OnCommit = Callable[[list[dict[str, Any]]], None]


class Runner:
    """Runs a RunConfig into a run folder."""

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None, log: Log = print) -> None:
        self.cfg, self.out, self.progress, self.log = cfg, Path(out), progress, log
        self.folder = RunFolder(self.out, cfg)

    def prepare(self) -> TaskData:
        """Load the data and check the run folder; raises before anything is written."""
        data = load_task(self.cfg.data, text_encoder(self.cfg.model))
        self.check(data)
        return data

    def check(self, data: TaskData) -> None:
        """The model reads this data, and the folder holds no other experiment; writes nothing."""
        check_model_fits(self.cfg.model, data)
        self.folder.check(data)

    def run(
        self, data: TaskData | None = None, executor: Executor | None = None, on_commit: OnCommit | None = None
    ) -> list[dict[str, Any]]:
        """Run every unfinished (variant, seed) row and return the store's current rows.

        `on_commit` gets the store's rows after each row is committed (the MLflow mirror logs from them)."""
        data = data if data is not None else self.prepare()
        executor = executor if executor is not None else Executor()
        rows = RowRunner(self.cfg, self.out, self.progress, self.log)
        with folder_lock(self.out), ResultStore(self.folder.store_path) as store:  # one run per folder at a time
            self.folder.write_record(data)
            for v in self.cfg.variants:  # a redefined variant gets new rows; its old ones are kept, marked
                if n := store.supersede(v.name, config_key(v.model_dump(mode="json"))):
                    self.log(f"{v.name}: definition changed, {n} earlier rows kept as superseded")
            todo = self._todo(store, data)
            if todo:
                rows.remember_given(self.cfg.variants, store.rows(), lambda v, s: self.folder.row_config(data, v, s))
                for seed in executor.map_baselines(rows, data, list(dict.fromkeys(s for _, s in todo))):
                    self.log(f"seed {seed}: baseline ready")
                for (variant, seed), (status, result) in executor.map_rows(rows, data, todo):
                    self._log_row(variant, seed, status, result)
                    row_cfg = self.folder.row_config(data, variant, seed)
                    store.put(config_key(row_cfg), variant.name, seed, status, row_cfg,
                              {**result, "executor": executor.name})  # fmt: skip
                    if on_commit is not None:
                        on_commit(store.rows())
            return store.rows()

    def _todo(self, store: ResultStore, data: TaskData) -> list[RowTask]:
        todo: list[RowTask] = []
        for seed in self.cfg.seeds:
            seed_todo = [(v, seed) for v in self.cfg.variants if not store.done(self.folder.row_key(data, v, seed))]
            if not seed_todo:
                self.log(f"seed {seed}: all {len(self.cfg.variants)} variants already in the store, skipped")
            todo += seed_todo
        return todo

    def _log_row(self, variant: VariantConfig, seed: int, status: str, result: dict[str, Any]) -> None:
        if status == "ok":
            self.log(f"{variant.name} seed {seed}: test acc {result['test_accuracy']:.4f}, "
                     f"{result['file_bytes']:,} bytes ({result['export_format']})")  # fmt: skip
        else:
            self.log(f"[red]{variant.name} seed {seed} failed:[/red] {escape(result['error'])}")
