"""The main job: data → baseline → each variant's pipeline → artifacts → measurements → store.

One row per (variant, seed) is committed to the store as soon as it is measured; running
again into the same folder skips finished rows, so an interrupted run resumes.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime
import torch
from rich.markup import escape
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import nn

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData, load_task
from modelshrink.errors import ConfigError, ModelshrinkError
from modelshrink.export.compact import load_compact
from modelshrink.models.builders import ModelConfig, build_model, check_model_fits
from modelshrink.runner.checks import check_onnx, check_state
from modelshrink.runner.checks import failed as failed_checks
from modelshrink.store import ResultStore, config_key
from modelshrink.techniques.base import RunContext, TechniqueConfig, get_technique
from modelshrink.train import OnStep, fine_tune, fit, set_seed

if TYPE_CHECKING:
    from modelshrink.runner.executors import Executor

Log = Callable[[str], None]
SPLITS = ("train", "val", "test")
RUN_RECORD = "run.json"  # what a run folder's rows share; checked before resuming into the folder


@dataclass
class Stage:
    """The model after a prefix of a pipeline, with what its steps reported."""

    model: nn.Module
    model_config: ModelConfig  # rebuilds `model` (techniques may change the architecture)
    input_dim: int
    export_format: str = "fp32"
    steps: list[dict[str, Any]] = field(default_factory=list)  # per step: kind, skipped, details, seconds


def _split(data: TaskData, name: str) -> tuple[np.ndarray, np.ndarray]:
    return {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test)}[name]  # fmt: skip


def _environment() -> dict[str, str]:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "git_sha": sha or "unknown",
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
            "python": platform.python_version(), "cpu": _cpu_model(), "cpu_count": str(os.cpu_count())}  # fmt: skip


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), for the report's environment; "unknown" elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _train_seconds(baselines: Path, seed: int) -> float | None:
    """Seconds the seed's baseline (the teacher) trained, from its history.json; None if unknown."""
    found = sorted(baselines.glob(f"seed{seed}-*/history.json"))
    if len(found) != 1:
        return None
    return round(sum(h["seconds"] for h in json.loads(found[0].read_text())), 2)


class Runner:
    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None, log: Log = print) -> None:
        self.cfg, self.out, self.progress, self.log = cfg, Path(out), progress, log
        # Per-epoch histories for the report's training curves: the baseline's, and the fine-tuning of a step.
        self._history: list[dict[str, float]] = []
        self._tuned: list[dict[str, float]] = []

    # -- the job ---------------------------------------------------------------------------
    def prepare(self) -> TaskData:
        """Load the data and check the run folder; raises before anything is written."""
        data = load_task(self.cfg.data)
        check_model_fits(self.cfg.model, data)
        self._check_folder(data)
        return data

    def run(self, data: TaskData | None = None, executor: Executor | None = None) -> list[dict[str, Any]]:
        """Run every unfinished (variant, seed) row and return the store's current rows.

        In-process (the default) the variants of a seed share pipeline prefixes through an
        in-memory cache; other executors train each seed's baseline first (cached on disk), then
        run each row as one task that recomputes its prefix, and the driver commits the rows.
        """
        data = data if data is not None else self.prepare()
        env = _environment()
        with ResultStore(self.out / "results.sqlite") as store:  # refuses a foreign or corrupt store first
            (self.out / "config.json").write_text(self.cfg.model_dump_json(indent=2))
            (self.out / "preprocessing.json").write_text(json.dumps(data.preprocessing))
            (self.out / RUN_RECORD).write_text(json.dumps(self._record(data), indent=1, sort_keys=True))
            for v in self.cfg.variants:  # a redefined variant gets new rows; its old ones are kept, marked
                if n := store.supersede(v.name, config_key(v.model_dump(mode="json"))):
                    self.log(f"{v.name}: definition changed, {n} earlier rows kept as superseded")
            todo: list[tuple[VariantConfig, int]] = []
            for seed in self.cfg.seeds:
                keys = {v.name: config_key(self._row_config(data, v, seed)) for v in self.cfg.variants}
                seed_todo = [(v, seed) for v in self.cfg.variants if not store.done(keys[v.name])]
                if not seed_todo:
                    self.log(f"seed {seed}: all {len(keys)} variants already in the store, skipped")
                todo += seed_todo
            if executor is None or executor.name == "inprocess":
                for seed in dict.fromkeys(s for _, s in todo):
                    cache = {("baseline",): self.baseline_stage(data, seed)}
                    for variant, _ in (t for t in todo if t[1] == seed):
                        status, result = self.run_row(data, variant, seed, cache, env)
                        self._put(store, data, variant, seed, status, result)
            elif todo:
                for seed in executor.map_baselines(self, data, sorted({s for _, s in todo})):
                    self.log(f"seed {seed}: baseline ready")
                for (variant, seed), (status, result) in executor.map_rows(self, data, todo):
                    self._log_row(variant, seed, status, result)
                    self._put(store, data, variant, seed, status, {**result, "executor": executor.name})
            return store.rows()

    def _put(
        self, store: ResultStore, data: TaskData, variant: VariantConfig, seed: int, status: str, result: dict[str, Any]
    ) -> None:
        row_cfg = self._row_config(data, variant, seed)
        store.put(config_key(row_cfg), variant.name, seed, status, row_cfg, result)

    def run_row(
        self, data: TaskData, variant: VariantConfig, seed: int, cache: dict[tuple, Stage], env: dict[str, str],
        quiet: bool = False,
    ) -> tuple[str, dict[str, Any]]:  # fmt: skip
        """One (variant, seed): its measurements, or the error; never raises for a failing variant."""
        t0 = time.perf_counter()
        try:
            result = self._variant(data, variant, seed, cache)
            status = "ok"
        except Exception as err:  # any failure is recorded, and the sweep moves on
            result, status = {"error": f"{type(err).__name__}: {err}"}, "failed"
            if not isinstance(err, ModelshrinkError):  # a bug, not bad input: keep the trace
                result["traceback"] = traceback.format_exc()
        result.update(env, wall_s=round(time.perf_counter() - t0, 2), executor="inprocess")
        if not quiet:
            self._log_row(variant, seed, status, result)
        return status, result

    def _log_row(self, variant: VariantConfig, seed: int, status: str, result: dict[str, Any]) -> None:
        if status == "ok":
            self.log(f"{variant.name} seed {seed}: test acc {result['test_accuracy']:.4f}, "
                     f"{result['file_bytes']:,} bytes ({result['export_format']})")  # fmt: skip
        else:
            self.log(f"[red]{variant.name} seed {seed} failed:[/red] {escape(result['error'])}")

    def _shared(self, data: TaskData) -> dict[str, Any]:
        """What every row of a folder shares: data (by content, not path), model, training."""
        c = self.cfg
        return {"data": c.data.model_dump(mode="json", exclude={"path"}), "data_sha256": data.fingerprint,
                "model": c.model.model_dump(mode="json"), "train": c.train.model_dump(mode="json"),
                "latency_threads": c.latency_threads}  # fmt: skip

    def _record(self, data: TaskData) -> dict[str, Any]:
        old = self._read_record()
        variants = dict(old.get("variants", {})) if old else {}
        variants.update({v.name: v.model_dump(mode="json") for v in self.cfg.variants})
        return {**self._shared(data), "variants": variants}

    def _read_record(self) -> dict[str, Any] | None:
        path = self.out / RUN_RECORD
        if not path.is_file():
            return None
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path} is unreadable ({err}); use a new --out folder") from err
        return record

    def _check_folder(self, data: TaskData) -> None:
        """A run folder holds one experiment: resuming, adding seeds and variants or redefining a
        variant (new rows; the old ones are kept as superseded) is fine; changing the data, model
        or training is not, since every row of the folder is compared with the same baselines."""
        if (self.out / "results.sqlite").exists():
            ResultStore(self.out / "results.sqlite", readonly=True).close()  # foreign or corrupt: refused, untouched
        old = self._read_record()
        if old is None:
            return
        shared = self._shared(data)
        changed = [k for k, v in shared.items() if old.get(k) != v]
        if changed:
            raise ConfigError(
                f"run folder {str(self.out)!r} holds results for a different {', '.join(changed)}; "
                "pass a new --out folder, or the same settings to resume"
            )

    def _row_config(self, data: TaskData, variant: VariantConfig, seed: int) -> dict[str, Any]:
        return {**self._shared(data), "variant": variant.model_dump(mode="json"), "seed": seed}

    # -- baseline --------------------------------------------------------------------------
    def baseline_stage(self, data: TaskData, seed: int) -> Stage:
        """The seed's trained baseline as the first stage of every pipeline that starts from it."""
        return Stage(self._baseline(data, seed), self.cfg.model, data.input_dim)

    def _baseline(self, data: TaskData, seed: int) -> nn.Module:
        """Train the baseline, or load it when this folder already holds one for this config."""
        c = self.cfg
        key = config_key({**self._shared(data), "seed": seed})
        folder = self.out / "baselines" / f"seed{seed}-{key}"
        set_seed(seed)
        model = build_model(c.model, data.input_dim, data.num_labels)
        weights = folder / "model.safetensors"
        if weights.is_file():
            model.load_state_dict(load_file(weights))  # safetensors: no code runs on load
            model.eval()
            history_file = folder / "history.json"  # for the report's training curves
            self._history = json.loads(history_file.read_text()) if history_file.is_file() else []
            self.log(f"seed {seed}: baseline loaded from {folder}")
            return model
        history = fit(model, data, c.train, seed, self.progress, label=f"baseline seed {seed}")
        self._history = history
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "history.json").write_text(json.dumps(history, indent=1))
        (folder / "model.json").write_text(json.dumps({"model": c.model.model_dump(mode="json"),
                                                       "input_dim": data.input_dim, "labels": data.labels}))  # fmt: skip
        tmp = folder / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(weights)
        epochs = len(history)
        secs = sum(h["seconds"] for h in history) / epochs
        self.log(f"seed {seed}: baseline trained, {epochs} epochs, {secs:.2f} s/epoch, "
                 f"best val_loss {min(h['val_loss'] for h in history):.4f}")  # fmt: skip
        return model

    # -- variants --------------------------------------------------------------------------
    def _context(
        self, data: TaskData, seed: int, label: str, stage: Stage | None = None, teacher: nn.Module | None = None
    ) -> RunContext:
        bs = self.cfg.train.batch_size

        def tune(
            model: nn.Module, epochs: int, on_step: OnStep | None = None, params: Sequence[nn.Parameter] | None = None
        ) -> None:
            self._tuned += fine_tune(model, data, self.cfg.train, seed, epochs, on_step, params, self.progress, label)

        return RunContext(
            example_input=torch.from_numpy(data.x_train[:8]),
            seed=seed,
            steps_per_epoch=-(-len(data.x_train) // bs),
            fine_tune=tune,
            # Up to 64 training batches for static quantization (the technique says how many it uses).
            calibration=[
                torch.from_numpy(data.x_train[i : i + bs]) for i in range(0, min(len(data.x_train), bs * 64), bs)
            ],
            teacher=teacher,
            teacher_train_seconds=_train_seconds(self.out / "baselines", seed) if teacher is not None else None,
            model_config=stage.model_config if stage else self.cfg.model,
            input_dim=stage.input_dim if stage else data.input_dim,
            num_labels=data.num_labels,
            train=lambda model, loss_fn: fit(model, data, self.cfg.train, seed, self.progress, label, loss_fn),
        )

    def _stage(self, data: TaskData, variant: VariantConfig, seed: int, cache: dict[tuple, Stage]) -> Stage:
        """Apply the variant's steps, reusing the longest prefix another variant already computed."""
        head: tuple = (variant.start,)
        keys = [head + tuple(s.model_dump_json() for s in variant.steps[:i]) for i in range(len(variant.steps) + 1)]
        done = max(i for i, k in enumerate(keys) if k in cache) if any(k in cache for k in keys) else -1
        if done < 0:  # start: scratch, nothing computed yet
            set_seed(seed)
            cache[keys[0]] = Stage(build_model(self.cfg.model, data.input_dim, data.num_labels), self.cfg.model,
                                   data.input_dim)  # fmt: skip
            done = 0
        stage = cache[keys[done]]
        for i in range(done, len(variant.steps)):
            step: TechniqueConfig = variant.steps[i]
            model = copy.deepcopy(stage.model)
            t0 = time.perf_counter()
            ctx = self._context(data, seed, f"{variant.name}: {step.kind}", stage, cache[("baseline",)].model
                                if ("baseline",) in cache else None)  # fmt: skip
            self._tuned = []
            res = get_technique(step.kind).apply(model, step, ctx)
            record = {"kind": step.kind, "skipped": [vars(s) for s in res.skipped], "details": res.details,
                      "seconds": round(time.perf_counter() - t0, 2), "history": self._tuned}  # fmt: skip
            for s in res.skipped:
                self.log(escape(f"{variant.name}: {step.kind} skipped {s.name} ({s.type}): {s.reason}"))
            if checks := check_state(res.model.state_dict(), stage.steps, after=step.kind):  # earlier gains kept?
                record["checks"] = checks
                self._log_failed_checks(variant.name, checks)
            stage = Stage(res.model.eval(), res.model_config or stage.model_config, res.input_dim or stage.input_dim,
                          res.export_format or stage.export_format, stage.steps + [record])  # fmt: skip
            cache[keys[i + 1]] = stage
        return stage

    def _variant(self, data: TaskData, variant: VariantConfig, seed: int, cache: dict[tuple, Stage]) -> dict[str, Any]:
        """Artifacts and measurements of one variant (runner/measure_variant.py)."""
        from modelshrink.runner.measure_variant import measure_variant

        return measure_variant(self, data, variant, seed, cache)

    def _export_checks(self, name: str, stage: Stage, onnx_path: Path, compact_path: Path) -> dict[str, Any]:
        """Earlier gains on the files themselves (see runner/checks.py); failures are recorded, not fatal."""
        reference = stage.model.state_dict()
        checks = check_onnx(onnx_path, reference, stage.steps)
        checks += check_state(load_compact(compact_path)[0], stage.steps, after="export:compact")
        self._log_failed_checks(name, checks)
        every = [c for s in stage.steps for c in s.get("checks", [])] + checks
        return {"checks": checks, "checks_failed": len(failed_checks(every))}

    def _log_failed_checks(self, label: str, checks: list[dict[str, Any]]) -> None:
        for c in failed_checks(checks):
            self.log(escape(f"[warning] {label}: {c['property']} (from {c['established_by']}) not kept after "
                            f"{c['after']}: measured {c['measured']}"))  # fmt: skip
