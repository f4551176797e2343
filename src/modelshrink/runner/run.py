"""The main job: data → baseline → each variant's pipeline → artifacts → measurements → store.

One row per (variant, seed) is committed to the store as soon as it is measured; running
again into the same folder skips finished rows, so an interrupted run resumes.
"""

from __future__ import annotations

import copy
import itertools
import json
import platform
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from modelshrink.export.compact import load_compact, save_compact
from modelshrink.export.onnx import OnnxClassifier, export_onnx, onnx_weight_stats
from modelshrink.measure.accuracy import classification_metrics, predict_logits
from modelshrink.measure.latency import latency_ms
from modelshrink.measure.size import file_sizes, model_stats
from modelshrink.models.builders import ModelConfig, build_model
from modelshrink.runner.store import ResultStore, config_key
from modelshrink.techniques.base import RunContext, TechniqueConfig, get_technique
from modelshrink.train import OnStep, evaluate, fine_tune, fit, set_seed

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
            "python": platform.python_version()}  # fmt: skip


def _train_seconds(baselines: Path, seed: int) -> float | None:
    """Seconds the seed's baseline (the teacher) trained, from its history.json; None if unknown."""
    found = sorted(baselines.glob(f"seed{seed}-*/history.json"))
    if len(found) != 1:
        return None
    return round(sum(h["seconds"] for h in json.loads(found[0].read_text())), 2)


class Runner:
    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None, log: Log = print) -> None:
        self.cfg, self.out, self.progress, self.log = cfg, Path(out), progress, log

    # -- the job ---------------------------------------------------------------------------
    def prepare(self) -> TaskData:
        """Load the data and check the run folder; raises before anything is written."""
        data = load_task(self.cfg.data)
        if data.kind == "image" and self.cfg.model.name == "lstm":
            raise ConfigError(
                f"task {self.cfg.data.task!r} gives images but model 'lstm' reads token ids; "
                "set `model: {name: cnn}` in the config or use --preset digits"
            )
        self._check_folder(data)
        return data

    def run(self, data: TaskData | None = None) -> list[dict[str, Any]]:
        data = data if data is not None else self.prepare()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(self.cfg.model_dump_json(indent=2))
        (self.out / "preprocessing.json").write_text(json.dumps(data.preprocessing))
        (self.out / RUN_RECORD).write_text(json.dumps(self._record(data), indent=1, sort_keys=True))
        env = _environment()
        with ResultStore(self.out / "results.sqlite") as store:
            for seed in self.cfg.seeds:
                keys = {v.name: config_key(self._row_config(data, v, seed)) for v in self.cfg.variants}
                todo = [v for v in self.cfg.variants if not store.done(keys[v.name])]
                if not todo:
                    self.log(f"seed {seed}: all {len(keys)} variants already in the store, skipped")
                    continue
                cache = {("baseline",): Stage(self._baseline(data, seed), self.cfg.model, data.input_dim)}
                for variant in todo:
                    t0 = time.perf_counter()
                    row_cfg = self._row_config(data, variant, seed)
                    try:
                        result = self._variant(data, variant, seed, cache)
                        status = "ok"
                        self.log(f"{variant.name} seed {seed}: test acc {result['test_accuracy']:.4f}, "
                                 f"{result['file_bytes']:,} bytes ({result['export_format']})")  # fmt: skip
                    except Exception as err:  # any failure is recorded, and the sweep moves on
                        result, status = {"error": f"{type(err).__name__}: {err}"}, "failed"
                        self.log(
                            f"[red]{variant.name} seed {seed} failed:[/red] {escape(f'{type(err).__name__}: {err}')}"
                        )
                        if not isinstance(err, ModelshrinkError):  # a bug, not bad input: keep the trace
                            result["traceback"] = traceback.format_exc()
                    result.update(env, wall_s=round(time.perf_counter() - t0, 2))
                    store.put(keys[variant.name], variant.name, seed, status, row_cfg, result)
            return store.rows()

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
        """A run folder holds one experiment: resuming or adding seeds and variants is fine,
        changing the data, model, training or a variant's definition is not (rows would mix)."""
        old = self._read_record()
        if old is None:
            return
        shared = self._shared(data)
        changed = [k for k, v in shared.items() if old.get(k) != v]
        changed += [f"variant {v.name!r}" for v in self.cfg.variants
                    if v.name in old.get("variants", {}) and old["variants"][v.name] != v.model_dump(mode="json")]  # fmt: skip
        if changed:
            raise ConfigError(
                f"run folder {str(self.out)!r} holds results for a different {', '.join(changed)}; "
                "pass a new --out folder, or the same settings to resume"
            )

    def _row_config(self, data: TaskData, variant: VariantConfig, seed: int) -> dict[str, Any]:
        return {**self._shared(data), "variant": variant.model_dump(mode="json"), "seed": seed}

    # -- baseline --------------------------------------------------------------------------
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
            self.log(f"seed {seed}: baseline loaded from {folder}")
            return model
        history = fit(model, data, c.train, seed, self.progress, label=f"baseline seed {seed}")
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
            fine_tune(model, data, self.cfg.train, seed, epochs, on_step, params, self.progress, label)

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
            res = get_technique(step.kind).apply(model, step, ctx)
            record = {"kind": step.kind, "skipped": [vars(s) for s in res.skipped], "details": res.details,
                      "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
            for s in res.skipped:
                self.log(escape(f"{variant.name}: {step.kind} skipped {s.name} ({s.type}): {s.reason}"))
            stage = Stage(res.model.eval(), res.model_config or stage.model_config, res.input_dim or stage.input_dim,
                          res.export_format or stage.export_format, stage.steps + [record])  # fmt: skip
            cache[keys[i + 1]] = stage
        return stage

    def _variant(self, data: TaskData, variant: VariantConfig, seed: int, cache: dict[tuple, Stage]) -> dict[str, Any]:
        stage = self._stage(data, variant, seed, cache)
        model = stage.model
        folder = self.out / "models" / f"{variant.name}-seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        ctx = self._context(data, seed, variant.name)

        # Artifacts: the deployable ONNX file in the variant's format, and the compact weights file.
        # quant.int8_static says how many calibration batches it wants.
        n_calib = next((s["details"]["calibration_batches"] for s in reversed(stage.steps)
                        if "calibration_batches" in s["details"]), None)  # fmt: skip
        calibration = list(itertools.islice(ctx.calibration or [], n_calib)) if n_calib else None
        onnx_path = export_onnx(model, ctx.example_input, folder / "model.onnx", stage.export_format,  # type: ignore[arg-type]
                                calibration=calibration)  # fmt: skip

        # Accuracy from the ONNX file, never from the torch model it came from.
        clf = OnnxClassifier(onnx_path, threads=self.cfg.latency_threads)
        metrics: dict[str, Any] = {}
        test_logits = None
        for split in SPLITS:
            x, y = _split(data, split)
            logits = predict_logits(lambda xb: clf.predict_logits(xb, batch_size=len(xb)), x)
            metrics[split] = classification_metrics(y, logits, data.num_labels)
            if split == "test":
                test_logits = logits
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        # Vocabulary, labels and settings beside the model: the folder alone classifies raw text.
        (folder / "preprocessing.json").write_text(json.dumps(data.preprocessing))

        torch_logits = predict_logits(lambda xb: model(torch.from_numpy(xb)).detach().numpy(), data.x_test)
        agreement = float((torch_logits.argmax(1) == test_logits.argmax(1)).mean())  # type: ignore[union-attr]

        latency = latency_ms(lambda xb: clf.session.run(None, {clf.input_name: xb}), data.x_test)
        stats = model_stats(model)
        weights = onnx_weight_stats(onnx_path)
        sizes = file_sizes(onnx_path)
        return {
            "export_format": stage.export_format,
            "steps": stage.steps,
            "parameters": stats["parameters"],
            "nonzeros": stats["nonzeros"],
            "distinct_values_max": stats["distinct_values_max"],
            "dense_fp32_bytes": stats["dense_fp32_bytes"],
            "file_bytes": sizes["file_bytes"],  # the ONNX file a user deploys
            "file_gzip_bytes": sizes["gzip_bytes"],
            "file_zstd_bytes": sizes["zstd_bytes"],
            "onnx_weights": {k: weights[k] for k in ("int8_bytes", "float_bytes", "total_bytes", "op_types")},
            **{f"{s}_accuracy": metrics[s]["accuracy"] for s in SPLITS},
            "test_macro_f1": metrics["test"]["macro_f1"],
            "test_agreement_with_torch": agreement,  # share of test predictions equal to the float torch model's
            **latency,  # one input at a time, ONNX Runtime with `latency_threads` threads
            "latency_threads": self.cfg.latency_threads,
            **self._compact(model, data, folder, stage),
            "artifacts": {
                "onnx": str(onnx_path.relative_to(self.out)),
                "compact": str((folder / "weights.msz").relative_to(self.out)),
            },  # fmt: skip
        }

    def _compact(self, model: nn.Module, data: TaskData, folder: Path, stage: Stage) -> dict[str, Any]:
        """Write the compact weights file, load it back (no pickle) and measure its test accuracy.

        The compact format holds float weights: for a quantized variant it is not the deployed
        model, so its size and accuracy are not reported as the variant's (None).
        """
        path = folder / "weights.msz"
        save_compact({k: v.detach() for k, v in model.state_dict().items()}, path,
                     {"model": stage.model_config.model_dump(mode="json"), "input_dim": stage.input_dim,
                      "labels": data.labels})  # fmt: skip
        if stage.export_format != "fp32":
            return {"compact_bytes": None, "compact_test_accuracy": None}
        state, _ = load_compact(path)
        reloaded = build_model(stage.model_config, stage.input_dim, data.num_labels)
        reloaded.load_state_dict(state)
        accuracy = evaluate(reloaded, data.x_test, data.y_test, data.num_labels)["accuracy"]
        return {"compact_bytes": path.stat().st_size, "compact_test_accuracy": accuracy}
