"""The Python API: compare compression techniques on your own model, or apply one to it.

    import modelshrink
    results = modelshrink.compare(build, "digits", {"pruned": [{"kind": "prune.magnitude"}]})
    pruned = modelshrink.prune(model, sparsity=0.5).model

`compare` runs the same job as `modelshrink run` (runner/job.py: baseline training, each
variant's pipeline, ONNX artifacts, measurements, results store, report.html) in a run folder. The technique functions are thin
wrappers over the technique registry, for use on a model in hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelshrink.config import RunConfig, VariantConfig, parse_config
from modelshrink.data.tasks import DataConfig, TaskData
from modelshrink.errors import ConfigError, UnknownNameError
from modelshrink.export.onnx import FORMATS, export_onnx
from modelshrink.models.builders import ModelConfig
from modelshrink.models.byo import ModelInputs, register_build_fn
from modelshrink.techniques import TECHNIQUES, RunContext, TechniqueResult, get_technique
from modelshrink.train import TrainConfig

Variants = Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[VariantConfig | Mapping[str, Any]]


@dataclasses.dataclass
class Results:
    """What `compare` measured: one row per (variant, seed), as in the run folder's results store."""

    rows: list[dict[str, Any]]
    out: Path  # the run folder: results.sqlite, summary.md, models/<variant>-seed<n>/model.onnx

    def table(self) -> str:
        """The Markdown summary (mean ± std over seeds), as `modelshrink report` writes it."""
        from modelshrink.report.tables import summary_markdown

        return summary_markdown(self.rows)

    def __getitem__(self, variant: str) -> list[dict[str, Any]]:
        """The rows of one variant (one per seed)."""
        rows = [r for r in self.rows if r["variant"] == variant]
        if not rows:
            raise UnknownNameError(
                f"no variant {variant!r}; variants: {', '.join(dict.fromkeys(r['variant'] for r in self.rows))}"
            )
        return rows


def _variants(variants: Variants) -> list[dict[str, Any]]:
    if isinstance(variants, Mapping):
        out = [{"name": name, "steps": list(steps)} for name, steps in variants.items()]
    else:
        out = [v.model_dump() if isinstance(v, VariantConfig) else dict(v) for v in variants]
    if not any(not v.get("steps") for v in out):  # every comparison needs the uncompressed model beside it
        out.insert(0, {"name": "baseline", "steps": []})
    return out


def compare(
    build_fn: Callable[[ModelInputs], nn.Module],
    data: TaskData | DataConfig | str,
    variants: Variants,
    seeds: Sequence[int] = (0,),
    train: TrainConfig | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
) -> Results:
    """Train `build_fn`'s model on `data`, apply each variant, and measure every artifact.

    Args:
        build_fn: called with `ModelInputs(input_dim, num_labels)`; returns the nn.Module.
        data: a task name ("digits", "emotion", ...), a DataConfig, or a TaskData in memory.
        variants: {name: [technique steps]} or a list of VariantConfig/dicts; a baseline is added if none.
        seeds, train: as in a run config; `out`: the run folder (default runs/<timestamp>).
    """
    from modelshrink.runner.job import default_out, prepare, run_job

    ref = register_build_fn(build_fn)
    train_raw = train.model_dump() if isinstance(train, TrainConfig) else dict(train or {})
    if isinstance(data, TaskData):
        data_raw: dict[str, Any] = {"task": f"in-memory ({data.source})"}
    elif isinstance(data, DataConfig):
        data_raw = data.model_dump()
    else:
        data_raw = {"task": data}
    raw = {"data": data_raw, "model": {"name": "custom", "build": ref}, "train": train_raw, "seeds": list(seeds),
           "variants": _variants(variants)}  # fmt: skip
    cfg: RunConfig = parse_config(raw, "modelshrink.compare")
    folder = Path(out) if out is not None else default_out("compare-")
    task_data = prepare(cfg, folder, data if isinstance(data, TaskData) else None)
    res = run_job(cfg, folder, task_data)
    return Results(res.rows, folder)


def _context(data: TaskData | None, train_cfg: TrainConfig | None, exclude: Sequence[str], **extra: Any) -> RunContext:
    from modelshrink.runner.pipeline import make_context

    fields = {f.name for f in dataclasses.fields(RunContext)}
    unknown = sorted(set(extra) - fields)
    if unknown:  # e.g. `teacher` before a distillation technique adds it to the context
        raise ConfigError(f"this version's RunContext has no {', '.join(unknown)}; update modelshrink")
    return make_context(data, train_cfg or TrainConfig(), exclude=tuple(exclude), **extra)


def prune(
    model: nn.Module, sparsity: float = 0.5, data: TaskData | None = None, epochs: int = 0,
    exclude: Sequence[str] = (), train: TrainConfig | None = None,
) -> TechniqueResult:  # fmt: skip
    """Magnitude-prune `model` in place to `sparsity` (fraction of zero weights).

    epochs=0: one shot, no data needed. epochs>0: reach `sparsity` at once and fine-tune on
    `data` with the masks held (TFMOT's ConstantSparsity). Returns the result: `.model`,
    `.skipped` (layers left alone, and why), `.details`.
    """
    tech = get_technique("prune.magnitude")
    cfg = tech.config_cls.model_validate({"kind": "prune.magnitude", "final_sparsity": sparsity,
                                         "schedule": "constant", "epochs": epochs})  # fmt: skip
    return tech.apply(model, cfg, _context(data, train, exclude))


def cluster(
    model: nn.Module, clusters: int = 16, data: TaskData | None = None, epochs: int = 0,
    exclude: Sequence[str] = (), train: TrainConfig | None = None,
) -> TechniqueResult:  # fmt: skip
    """Cluster each weight tensor of `model` in place to `clusters` shared values (k-means++).

    epochs>0 fine-tunes the shared values on `data`. Returns the result (`.model`, `.skipped`, `.details`).
    """
    tech = get_technique("cluster.kmeans")
    cfg = tech.config_cls.model_validate({"kind": "cluster.kmeans", "clusters": clusters, "epochs": epochs})
    return tech.apply(model, cfg, _context(data, train, exclude))


def quantize(
    model: nn.Module, example_input: torch.Tensor, path: str | Path, mode: str = "int8_dynamic",
    calibration: Sequence[torch.Tensor] | None = None,
) -> Path:  # fmt: skip
    """Write `model` as a quantized ONNX file at `path` and return the path.

    mode: "int8_dynamic" (int8 weights), "int8_static" (int8 weights and activations; needs
    `calibration` input batches) or "fp16". Quantization is ONNX Runtime's, on the exported
    graph: the PyTorch model itself is not changed. Run the file with
    `modelshrink.export.onnx.OnnxClassifier(path)`.
    """
    if mode not in FORMATS or mode == "fp32":
        raise ConfigError(f"unknown quantization mode {mode!r}; use one of: int8_dynamic, int8_static, fp16")
    return export_onnx(model, example_input, Path(path), mode, calibration=calibration)  # type: ignore[arg-type]


def distill(
    teacher: nn.Module, teacher_config: ModelConfig, data: TaskData, student: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None, train: TrainConfig | None = None,
) -> TechniqueResult:  # fmt: skip
    """Train a smaller student to match `teacher` on `data` (knowledge distillation, technique "distill.kd").

    The student is built from `teacher_config` (the ModelConfig the teacher was built with) with the
    fields of `student` changed, e.g. {"embed_dim": 8, "hidden": 32}; None: the teacher at half width.
    `config`: other distill.kd settings, e.g. {"temperature": 4.0}. Returns the trained student in
    `.model` and its config in `.model_config`; `.view` is "words" when the student reads the word
    tokenizer (`data.view("words")`, an hf teacher's built-in student) rather than the teacher's tokens.
    """
    if "distill.kd" not in TECHNIQUES:
        raise UnknownNameError(
            "modelshrink.distill needs the technique 'distill.kd', which this installation does not register; "
            f"registered: {', '.join(sorted(TECHNIQUES))}"
        )
    if not isinstance(teacher_config, ModelConfig):
        raise ConfigError(
            f"teacher_config must be the ModelConfig the teacher was built with, got {type(teacher_config).__name__}"
        )
    tech = TECHNIQUES["distill.kd"]
    cfg = tech.config_cls.model_validate(
        {**dict(config or {}), "kind": "distill.kd", "student": dict(student) if student is not None else None}
    )
    from modelshrink.runner.pipeline import training_logits

    cached: list[torch.Tensor] = []

    def teacher_logits() -> torch.Tensor:  # computed once, reused by every epoch
        if not cached:
            cached.append(torch.from_numpy(training_logits(teacher, data)))
        return cached[0]

    ctx = _context(data, train, (), teacher=teacher.eval(), model_config=teacher_config, teacher_logits=teacher_logits)
    return tech.apply(teacher, cfg, ctx)
