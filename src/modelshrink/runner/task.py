"""One row's work, the same in every executor: the variant's model from the pipeline, its files
measured, the row or the error. Never raises for a failing variant: the sweep moves on."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ModelshrinkError
from modelshrink.measure.latency import gpu_latency_provider
from modelshrink.measure.size import model_stats
from modelshrink.models.builders import build_model
from modelshrink.runner.folder import RunFolder, environment
from modelshrink.runner.measure import (
    ArtifactCache,
    MeasureSettings,
    Untimed,
    evaluate_variant,
    time_variant,
    time_variants,
)
from modelshrink.runner.pipeline import Cache, Log, Pipeline, Stage, make_context

RowResult = tuple[str, dict[str, Any]]  # ("ok" | "failed", the stored row or the error)


class RowRunner:
    """Runs the rows of one run folder; what an executor's worker holds."""

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None, log: Log = print) -> None:
        self.cfg = cfg
        self.folder = RunFolder(out, cfg)
        self.pipeline = Pipeline(cfg, self.folder, progress, log)
        self.log = log
        self.cache = ArtifactCache()  # files already timed in this process
        # Rows of a given model measured as it is (no steps, no training): the same files whatever the seed, so
        # later seeds in this process reuse the first seed's row (it says so: `measured_in_seed`).
        self.given: dict[str, tuple[int, dict[str, Any]]] = {}
        self.env = environment()

    def remember_given(self, variants: Sequence[VariantConfig], stored: list[dict[str, Any]],
                       row_config: Callable[[VariantConfig, int], dict[str, Any]]) -> None:  # fmt: skip
        """A given model's row already in the store (an earlier run into this folder, e.g. seed 0 of a benchmark run
        in parts) serves this process's seeds too: the same variant, data and model (its row config but for the seed)."""
        for v in variants:
            if v.steps or v.start != "baseline" or v.name in self.given:
                continue
            for r in stored:
                if (r["variant"], r["status"], r.get("baseline_source")) == (v.name, "ok", "measured") and r[
                    "config"
                ] == row_config(v, r["seed"]):
                    result = {k: x for k, x in r.items() if k not in _STORE_FIELDS}
                    self.given[v.name] = (r.get("measured_in_seed", r["seed"]), result)
                    break

    def baseline(self, data: TaskData, seed: int) -> Stage:
        return self.pipeline.baseline(data, seed)

    def run(
        self, data: TaskData, variant: VariantConfig, seed: int, cache: Cache, stage: Stage | None = None
    ) -> RowResult:
        """One (variant, seed): its measurements, or the error (with the traceback of a bug).

        `stage`: the variant's model, built elsewhere (a GPU task on Ray); then only measured here."""
        t0 = time.perf_counter()
        try:
            result, status = self._measure(data, variant, seed, cache, stage), "ok"
        except Exception as err:  # any failure is recorded, and the sweep moves on
            result, status = _failure(err), "failed"
        result.update(self.env, wall_s=round(time.perf_counter() - t0, 2))
        return status, result

    def stage(self, data: TaskData, variant: VariantConfig, seed: int, cache: Cache) -> tuple[str, Any]:
        """Only the variant's model: ("ok", its Stage) or ("failed", the error row)."""
        t0 = time.perf_counter()
        try:
            return "ok", self.pipeline.stage(data, variant, seed, cache)
        except Exception as err:  # recorded as the row's failure, as in `run`
            return "failed", {**_failure(err), **self.env, "wall_s": round(time.perf_counter() - t0, 2)}

    def evaluate(self, data: TaskData, variant: VariantConfig, seed: int, cache: Cache, stage: Stage) -> RowResult:
        """A worker's half of a row built in this process: its files written and evaluated, not timed:
        ("evaluated", {"evaluated": Evaluated}) for `finish` in another process, or ("failed", the error row)."""
        t0 = time.perf_counter()
        try:
            ev = self._evaluate(data, variant, seed, cache, stage, built_here=True)
            ev.untimed.live = None  # the loaded files stay here: the other process loads them again
            return "evaluated", {"evaluated": ev}
        except Exception as err:  # recorded as the row's failure, as in `run`
            return "failed", {**_failure(err), **self.env, "wall_s": round(time.perf_counter() - t0, 2)}

    def finish(self, data: TaskData, ev: Evaluated) -> RowResult:
        """A row evaluated in another process (`evaluate`): its files timed here, the row complete."""
        t0 = time.perf_counter()
        try:
            result, status = self._timed(data, ev), "ok"
        except Exception as err:  # e.g. a file that no longer loads: the row fails, the sweep moves on
            result, status = _failure(err), "failed"
        result.update(self.env, wall_s=round(time.perf_counter() - t0, 2))
        return status, result

    def finish_many(self, data: TaskData, evs: list[Evaluated]) -> list[RowResult]:
        """`finish` for rows evaluated on the same encoding of the data, timed together (`time_variants`: their
        memory probes pair across rows); each row's wall_s gets an equal share of the time. If that fails,
        each row is finished alone, so only a row whose file fails fails."""
        t0 = time.perf_counter()
        try:
            rows = time_variants([ev.untimed for ev in evs], data.view(evs[0].view), self.cache, self.log)
        except Exception:  # noqa: BLE001 - which row failed is found one row at a time
            return [self.finish(data, ev) for ev in evs]
        share = round((time.perf_counter() - t0) / max(1, len(evs)), 2)
        return [("ok", {**row.to_dict(), **ev.extras, **self.env, "wall_s": share})
                for row, ev in zip(rows, evs, strict=True)]  # fmt: skip

    def as_given(self, variant: VariantConfig, baseline: Stage | None) -> bool:
        """The row of a given model as it is (the user's weights, no steps): the same files whatever the seed."""
        return not variant.steps and variant.start == "baseline" and baseline is not None and (
            baseline.source == "measured")  # fmt: skip

    def _measure(
        self, data: TaskData, variant: VariantConfig, seed: int, cache: Cache, built: Stage | None = None
    ) -> dict[str, Any]:
        as_given = self.as_given(variant, cache.get(("baseline",)))
        if as_given and variant.name in self.given:  # e.g. a fine-tuned transformer's 90 MB files, minutes each
            first_seed, first = self.given[variant.name]
            self.log(f"{variant.name} seed {seed}: the given model, as measured for seed {first_seed} (same files)")
            return {**first, "measured_in_seed": first_seed}
        stage = built if built is not None else self.pipeline.stage(data, variant, seed, cache)
        result = self._timed(data, self._evaluate(data, variant, seed, cache, stage, built_here=built is None))
        if as_given:
            self.given[variant.name] = (seed, result)
        return result

    def _evaluate(
        self, data: TaskData, variant: VariantConfig, seed: int, cache: Cache, stage: Stage, built_here: bool
    ) -> Evaluated:
        own = data.view(stage.view)  # a student with its own tokenizer is measured on its own encoding
        baseline = cache.get(("baseline",))
        base_model = baseline.model if baseline is not None else build_model(self.cfg.model, data.input_dim,
                                                                              data.num_labels)  # fmt: skip
        # A stage built elsewhere trained there: here (the driver) only the CPU measures, whatever --device says.
        train = self.cfg.train if built_here else self.cfg.train.model_copy(update={"device": "cpu"})
        ctx = make_context(own, train, seed)
        settings = MeasureSettings(self.folder.out, self.cfg.latency_threads, ctx.example_input,
                                   list(ctx.calibration or []), self.cache, self.log,
                                   executorch=self.cfg.executorch,
                                   gpu_provider=gpu_latency_provider(ctx.device))  # fmt: skip
        folder = self.folder.model_dir(variant.name, seed)
        untimed = evaluate_variant(variant.name, stage, own, folder, model_stats(base_model)["dense_fp32_bytes"],
                                   settings)  # fmt: skip
        if variant.start == "baseline" and baseline is not None:
            untimed.row.baseline_history = baseline.history
        # How the baseline came to be (trained | measured: the user's weights as given | continued) and
        # where training ran (the resolved --device); accuracy is measured from the files on the CPU either way.
        source = baseline.source if variant.start == "baseline" and baseline is not None else "trained"
        device = ctx.device if built_here else self.cfg.train.device
        return Evaluated(untimed, {"baseline_source": source, "train_device": device}, stage.view)

    def _timed(self, data: TaskData, ev: Evaluated) -> dict[str, Any]:
        row = time_variant(ev.untimed, data.view(ev.view), self.cache, self.log)
        return {**row.to_dict(), **ev.extras}


@dataclass
class Evaluated:
    """A row whose files are written and evaluated, to be timed (`RowRunner.finish`), maybe in another process."""

    untimed: Untimed
    extras: dict[str, Any]  # the row's fields besides the measurements (baseline_source, train_device)
    view: str  # the encoding of the data the files read (TaskData.view: "" the run's own); timed on its test rows


# What the store adds to a row's measurements (ResultStore.rows, Runner.run); not part of the row's result.
_STORE_FIELDS = {"variant", "seed", "status", "key", "config", "superseded", "executor", "measured_in_seed"}


def _failure(err: Exception) -> dict[str, Any]:
    out = {"error": f"{type(err).__name__}: {err}"}
    if isinstance(err, MemoryError):  # often with no message of its own: say what it means
        out["error"] = (f"out of memory (MemoryError{': ' + str(err) if str(err) else ''}) while running "
                        "this row; free memory or use fewer --jobs, then rerun with --out on this folder")  # fmt: skip
    if not isinstance(err, ModelshrinkError):  # a bug, not bad input: keep the trace
        out["traceback"] = traceback.format_exc()
    return out
