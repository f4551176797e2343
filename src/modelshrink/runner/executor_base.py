"""The executor interface (runner/executors.py has the executors and `make_executor`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from modelshrink.config import VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.runner.pipeline import Cache
from modelshrink.runner.task import RowResult, RowRunner

RowTask = tuple[VariantConfig, int]


def threads_per_worker(jobs: int) -> int:
    """Split the machine's cores between the workers, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // jobs)


PREFIXES_KEPT = 48  # models a kept prefix cache holds besides the baseline (the reference LSTM: ~1.4 MB each)


def _trim(cache: Cache, keep: int) -> None:
    """Drop the oldest prefixes beyond `keep` (the baseline stays)."""
    for key in [k for k in cache if k != ("baseline",)][: -keep or None]:
        del cache[key]


class Executor:
    """In-process (the default): rows run in this process, seed by seed; the variants of a seed
    share pipeline prefixes through an in-memory cache."""

    name = "inprocess"
    # Set to {} to keep each seed's pipeline prefixes across map_rows calls (search: one call per batch of
    # trials), so a trial reuses a prefix an earlier batch fine-tuned; None: dropped after each call.
    prefixes: dict[tuple[str, int], Cache] | None = None

    def map_baselines(self, rows: RowRunner, data: TaskData, seeds: list[int]) -> Iterator[int]:
        """Train (or load) each seed's baseline ahead of its rows; yields each seed when it is ready.

        In-process this yields nothing: a seed's baseline trains when its rows start (in `map_rows`),
        so the first rows are in the store before the next seed's baseline trains.
        """
        return iter(())

    def map_rows(self, rows: RowRunner, data: TaskData, tasks: list[RowTask]) -> Iterator[tuple[RowTask, RowResult]]:
        """Run the rows; yields each (task, result) as it finishes, in any order."""
        for seed in dict.fromkeys(s for _, s in tasks):
            cache = self._prefix_cache(rows, data, seed)  # this seed's pipeline prefixes
            for variant, _ in (t for t in tasks if t[1] == seed):
                yield (variant, seed), rows.run(data, variant, seed, cache)
            _trim(cache, PREFIXES_KEPT)

    def _prefix_cache(self, rows: RowRunner, data: TaskData, seed: int) -> Cache:
        if self.prefixes is None:
            return {("baseline",): rows.baseline(data, seed)}
        key = (rows.cfg.model_dump_json(exclude={"variants"}), seed)  # the same experiment and seed only
        if key not in self.prefixes:
            self.prefixes[key] = {("baseline",): rows.baseline(data, seed)}
        return self.prefixes[key]

    def close(self) -> None:
        """Release workers or the cluster connection."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
