"""A variant's model: the seed's baseline (trained, or loaded from the folder's cache), then each
technique of its pipeline in order, reusing the longest prefix another variant already computed.

`make_context` is the one place a technique's `RunContext` is built (runs, the Python API and
the coverage probe use it).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import nn

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.device import resolve_device
from modelshrink.measure.accuracy import predict_logits
from modelshrink.models.builders import ModelConfig, build_model, fresh_head, pretrained
from modelshrink.models.checkpoint import load_weights
from modelshrink.runner.checks import check_state, failed
from modelshrink.runner.folder import RunFolder
from modelshrink.techniques._fold import fold_batchnorm
from modelshrink.techniques.base import RunContext, TechniqueConfig, get_technique
from modelshrink.train import LossFn, OnStep, TrainConfig, fine_tune, fit, set_seed, torch_predictor

Log = Callable[[str], None]
CALIBRATION_BATCHES = 64  # training batches offered for static quantization (the technique says how many it uses)
Cache = dict[tuple, "Stage"]  # pipeline prefix → the model after it, for the variants of one seed


@dataclass
class Stage:
    """The model after a prefix of a pipeline, with what its steps reported."""

    model: nn.Module
    model_config: ModelConfig  # rebuilds `model` (techniques may change the architecture)
    input_dim: int
    export_format: str = "fp32"
    steps: list[dict[str, Any]] = field(default_factory=list)  # per step: kind, skipped, details, seconds
    history: list[dict[str, float]] = field(default_factory=list)  # the baseline's training, per epoch
    # How the baseline came to be: "trained" here, "measured" (the user's weights as given) or
    # "continued" (the user's weights, trained further); stored in the row as `baseline_source`.
    source: str = "trained"
    # Which encoding of the data the model reads (TaskData.view): "" the run's own, "words" the word
    # tokenizer (a distilled student with its own tokenizer); its files carry that preprocessing.
    view: str = ""
    # The loss later steps fine-tune with (distill.kd's `teach_later`); None: the labels' cross-entropy.
    fine_tune_loss: LossFn | None = None


def make_context(
    data: TaskData | None, train: TrainConfig, seed: int = 0, *, progress: Progress | None = None, label: str = "",
    tuned: list[dict[str, float]] | None = None, max_epochs: int | None = None, loss_fn: LossFn | None = None, **fields: Any,
) -> RunContext:  # fmt: skip
    """A technique's context on `data` with the baseline's training recipe.

    `tuned` collects the fine-tuning history; `max_epochs` caps fine-tuning (the coverage probe); `loss_fn`
    replaces fine-tuning's cross-entropy (a distilled student's later steps: distill.kd `teach_later`);
    `fields` sets the rest of RunContext (teacher, model_config, exclude, ...). Without data the
    context offers no training.
    """
    if data is None:
        return RunContext(example_input=torch.zeros(0), seed=seed, **fields)
    bs = train.batch_size

    def tune(
        model: nn.Module, epochs: int, on_step: OnStep | None = None, params: Sequence[nn.Parameter] | None = None
    ) -> None:
        epochs = min(epochs, max_epochs) if max_epochs is not None else epochs
        history = fine_tune(model, data, train, seed, epochs, on_step, params, progress, label, loss_fn)
        if tuned is not None:
            tuned.extend(history)

    fields.setdefault("input_dim", data.input_dim)
    fields.setdefault("num_labels", data.num_labels)
    fields.setdefault("device", str(resolve_device(train.device)))
    fields.setdefault("train_inputs", lambda: data.x_train)
    fields.setdefault("preprocessing", data.preprocessing)
    if data.views:  # the same rows in another encoding: a context of its own (a word-tokenizer student)

        def view_context(name: str) -> RunContext:
            return make_context(data.view(name), train, seed, progress=progress, label=label, tuned=tuned,
                                max_epochs=max_epochs)  # fmt: skip

        fields.setdefault("view_context", view_context)
    return RunContext(
        example_input=torch.from_numpy(data.x_train[:8]),
        seed=seed,
        steps_per_epoch=-(-len(data.x_train) // bs),
        fine_tune=tune,
        calibration=[
            torch.from_numpy(data.x_train[i : i + bs])
            for i in range(0, min(len(data.x_train), bs * CALIBRATION_BATCHES), bs)
        ],  # fmt: skip
        train=lambda model, loss_fn: fit(model, data, train, seed, progress, label, loss_fn),
        **fields,
    )


def training_logits(teacher: nn.Module, data: TaskData) -> np.ndarray:
    """The teacher on every training row, (N, labels) in row order: eval mode (no dropout), each row
    classified alone and unpadded (`predict_logits`), as accuracy is measured."""
    return predict_logits(torch_predictor(teacher.eval()), data.x_train)


def log_failed_checks(log: Log, label: str, checks: list[dict[str, Any]]) -> None:
    for c in failed(checks):
        log(escape(f"[warning] {label}: {c['property']} (from {c['established_by']}) not kept after "
                   f"{c['after']}: measured {c['measured']}"))  # fmt: skip


class Pipeline:
    """Baselines and variant models of one run folder (no measuring, no store)."""

    def __init__(self, cfg: RunConfig, folder: RunFolder, progress: Progress | None = None, log: Log = print) -> None:
        self.cfg, self.folder, self.progress, self.log = cfg, folder, progress, log
        self._teacher_logits: dict[tuple[int, str], torch.Tensor] = {}  # (seed, baseline folder) → (N, labels)

    def baseline(self, data: TaskData, seed: int) -> Stage:
        """The seed's baseline, the first stage of every pipeline that starts from it: the user's weights
        measured as given, or trained (from scratch, or on from the user's weights with
        `train.from_weights: continue`) once, then loaded from the folder's cache (safetensors: no code runs)."""
        c = self.cfg
        folder = self.folder.baseline_dir(data, seed)
        set_seed(seed)
        model = build_model(c.model, data.input_dim, data.num_labels)
        rebuild = c.model.model_copy(update={"weights": None})  # the variants' files never name the user's path
        given = pretrained(c.model, data.labels)  # the user's weights, or an hf head whose labels are the data's
        if c.model.weights is not None:
            load_weights(model, c.model.weights)
        if not given:
            fresh_head(model, data.labels)  # a head trained for other labels is replaced (hf)
        if given and c.train.from_weights == "measure":
            what = c.model.weights or c.model.path
            self.log(f"seed {seed}: baseline is the given model ({what}), measured as it is; not trained")
            return self._folded(Stage(model.eval(), rebuild, data.input_dim, source="measured"), seed)
        source = "continued" if given else "trained"
        weights, history_file = folder / "model.safetensors", folder / "history.json"
        if weights.is_file():
            model.load_state_dict(load_file(weights))
            model.eval()
            history = json.loads(history_file.read_text()) if history_file.is_file() else []
            self.log(f"seed {seed}: baseline loaded from {folder}")
            return self._folded(Stage(model, rebuild, data.input_dim, history=history, source=source), seed)
        if c.model.name == "hf" and not given:
            self.log(f"seed {seed}: baseline: new classification head for {data.labels}; fine-tuning it first")
        history = fit(model, data, c.train, seed, self.progress, label=f"baseline seed {seed}")
        self._save(folder, model, history, data)
        secs = sum(h["seconds"] for h in history) / len(history)
        best = (max if c.train.monitor == "val_accuracy" else min)(h[c.train.monitor] for h in history)
        self.log(f"seed {seed}: baseline {source}, {len(history)} epochs, {secs:.2f} s/epoch, "
                 f"best {c.train.monitor} {best:.4f}")  # fmt: skip
        return self._folded(Stage(model, rebuild, data.input_dim, history=history, source=source), seed)

    def _save(self, folder: Path, model: nn.Module, history: list[dict[str, float]], data: TaskData) -> None:
        """The trained baseline into the folder's cache (history, rebuild config, safetensors written last)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "history.json").write_text(json.dumps(history, indent=1))
        rebuild = self.cfg.model.model_copy(update={"weights": None})
        (folder / "model.json").write_text(json.dumps({"model": rebuild.model_dump(mode="json"),
                                                       "input_dim": data.input_dim, "labels": data.labels}))  # fmt: skip
        tmp = folder / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(folder / "model.safetensors")

    def _folded(self, stage: Stage, seed: int) -> Stage:
        """The baseline with each BatchNorm folded into the Conv/Linear before it (techniques/_fold.py),
        so what pruning and clustering establish survives the export's own folding."""
        for f in fold_batchnorm(stage.model):
            self.log(f"seed {seed}: baseline: {f.batchnorm} folded into {f.layer}")
        return stage

    def stage(self, data: TaskData, variant: VariantConfig, seed: int, cache: Cache) -> Stage:
        """Apply the variant's steps, reusing the longest prefix another variant already computed."""
        head: tuple = (variant.start,)
        keys = [head + tuple(s.model_dump_json() for s in variant.steps[:i]) for i in range(len(variant.steps) + 1)]
        done = max((i for i, k in enumerate(keys) if k in cache), default=-1)
        if done < 0:  # start: scratch, nothing computed yet
            set_seed(seed)
            model = build_model(self.cfg.model, data.input_dim, data.num_labels)
            cache[keys[0]] = Stage(model, self.cfg.model.model_copy(update={"weights": None}), data.input_dim)
            done = 0
        stage = cache[keys[done]]
        baseline = cache.get(("baseline",))
        for i in range(done, len(variant.steps)):
            stage = self._apply(data, variant.name, seed, stage, variant.steps[i], baseline)
            cache[keys[i + 1]] = stage
        return stage

    def _apply(
        self, data: TaskData, name: str, seed: int, stage: Stage, step: TechniqueConfig, baseline: Stage | None
    ) -> Stage:
        """One technique on a copy of `stage`'s model; checks that earlier steps' gains survived it."""
        t0 = time.perf_counter()
        tuned: list[dict[str, float]] = []
        teacher = baseline.model if baseline is not None else None
        logits = self.teacher_logits(data, seed, teacher) if teacher is not None else None
        device = resolve_device(self.cfg.train.device)
        model = copy.deepcopy(stage.model).to(device)  # the technique's own tensors (masks, centroids) follow it
        if teacher is not None:
            teacher.to(device)  # moved back below: the baseline stays a CPU model between steps
        ctx = make_context(
            data.view(stage.view), self.cfg.train, seed, progress=self.progress, label=f"{name}: {step.kind}",
            tuned=tuned, teacher=teacher, teacher_logits=logits, model_config=stage.model_config,
            input_dim=stage.input_dim,
            teacher_train_seconds=self.folder.teacher_train_seconds(seed) if teacher is not None else None,
            loss_fn=stage.fine_tune_loss,
        )  # fmt: skip
        try:
            res = get_technique(step.kind).apply(model, step, ctx)
        finally:
            if teacher is not None:
                teacher.cpu()
        res.model.cpu()  # export and measuring read CPU models
        record = {"kind": step.kind, "skipped": [vars(s) for s in res.skipped], "details": res.details,
                  "properties": [p.to_dict() for p in res.properties],  # what later steps must keep (checks.py)
                  "seconds": round(time.perf_counter() - t0, 2), "history": tuned}  # fmt: skip
        for s in res.skipped:
            self.log(escape(f"{name}: {step.kind} skipped {s.name} ({s.type}): {s.reason}"))
        if checks := check_state(res.model.state_dict(), stage.steps, after=step.kind):  # earlier gains kept?
            record["checks"] = checks
            log_failed_checks(self.log, name, checks)
        return Stage(res.model.eval(), res.model_config or stage.model_config, res.input_dim or stage.input_dim,
                     res.export_format or stage.export_format, stage.steps + [record],
                     view=stage.view if res.view is None else res.view,
                     fine_tune_loss=stage.fine_tune_loss if res.fine_tune_loss is None else res.fine_tune_loss)  # fmt: skip

    def teacher_logits(self, data: TaskData, seed: int, teacher: nn.Module) -> Callable[[], torch.Tensor]:
        """The seed's teacher (baseline) on every training row, (N, labels) in row order, computed on first
        use and then reused by every student and epoch: kept in memory for the run, and saved in the
        baseline's folder (teacher_logits.npy, when the baseline was trained there) for other workers and
        resumed runs. Each row is classified alone and unpadded, as its accuracy is measured."""
        folder = self.folder.baseline_dir(data, seed)
        key = (seed, str(folder))

        def get() -> torch.Tensor:
            if key not in self._teacher_logits:
                path = folder / "teacher_logits.npy"
                saved = np.load(path, allow_pickle=False) if path.is_file() else None
                if saved is None or saved.shape != (len(data.x_train), data.num_labels):
                    t0 = time.perf_counter()
                    saved = training_logits(teacher, data)
                    self.log(f"seed {seed}: the teacher classified {len(saved):,} training rows for distillation "
                             f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
                    if (folder / "model.safetensors").is_file():  # a baseline trained here: its folder holds it
                        np.save(folder / "teacher_logits.tmp.npy", saved)
                        (folder / "teacher_logits.tmp.npy").replace(path)
                self._teacher_logits[key] = torch.from_numpy(saved)
            return self._teacher_logits[key]

        return get
