"""The executor interface (runner/executors.py has the executors and `make_executor`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from modelshrink.config import VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.runner.task import RowResult, RowRunner

RowTask = tuple[VariantConfig, int]


def threads_per_worker(jobs: int) -> int:
    """Split the machine's cores between the workers, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // jobs)


class Executor:
    """In-process (the default): rows run in this process, seed by seed; the variants of a seed
    share pipeline prefixes through an in-memory cache."""

    name = "inprocess"

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        """Train (or load) each seed's baseline ahead of its rows; yields each seed when it is ready.

        In-process this yields nothing: a seed's baseline trains when its rows start (in `map_rows`),
        so the first rows are in the store before the next seed's baseline trains.
        """
        return iter(())

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        """Run the rows; yields each (task, result) as it finishes, in any order."""
        for seed in dict.fromkeys(s for _, s in tasks):
            cache = {("baseline",): rows.baseline(data, seed)}  # this seed's pipeline prefixes, dropped after its rows
            for variant, _ in (t for t in tasks if t[1] == seed):
                yield (variant, seed), rows.run(data, variant, seed, cache)

    def close(self) -> None:
        """Release workers or the cluster connection."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
