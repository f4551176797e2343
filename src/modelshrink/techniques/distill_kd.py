"""distill.kd: knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

The trained baseline (`ctx.teacher`) teaches a smaller student built from scratch: the
student's config is the incoming model's config with the fields in `student` replaced
(any registered model, e.g. `{name: lstm, embed_dim: 8, hidden: 32}`), or, when `student`
is not given, the same model at half the width. The student trains with the baseline's
recipe (`ctx.train`: Adam, batch size, early stopping on validation loss, best weights
restored) on

    loss = alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

Soft targets at temperature T carry the teacher's "dark knowledge" (how wrong answers rank);
their gradients shrink as 1/T², so the soft term is scaled by T² (Hinton et al., section 2)
to keep its weight independent of T.

The teacher's logits come from `ctx.teacher_logits`: every training row classified once per seed by
the teacher in eval mode (no dropout), alone and unpadded, and reused by every student and epoch
(runner/pipeline.py keeps them). Without it (a hand-made RunContext) the teacher runs on every
training batch. Its forward time is reported next to the student's size gain.

A transformer teacher (`hf`) has two kinds of students:
- a smaller transformer, `student: {layers: k}` (default: half its layers), initialised from the
  teacher as DistilBERT was (Sanh et al. 2019, "DistilBERT, a distilled version of BERT"): one teacher
  layer out of every L/k, embeddings and head copied (models/hf.py `fewer_layers`);
- a built-in model with its own tokenizer, `student: {name: bilstm, ...}` (Tang et al. 2019,
  "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks"): it reads the word
  tokenizer fitted on the training texts (the data's "words" view), the teacher its own tokens of the
  same rows; the result names that view, so the runner measures and exports the student with it.
  A student with widths and no name (`{embed_dim: 8, hidden: 16}`, as the presets write it) is the
  reference LSTM on that view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models.builders import (
    MODEL_INPUT,
    MODEL_SETTINGS,
    ModelConfig,
    build_model,
)  # techniques → models: the allowed direction
from modelshrink.techniques.base import (
    RunContext,
    SearchStage,
    SearchTrial,
    TechniqueConfig,
    TechniqueResult,
    TrainFn,
    register_technique,
)
from modelshrink.train import RowsLoss, with_regularization

# Width fields halved for the default student (those a ModelConfig has; others are left alone).
_WIDTH_FIELDS = ("embed_dim", "hidden", "channels")
SEARCHED_EMBED_DIMS = (8, 16, 32)  # student widths search tries (the hand-found route: embedding 8, LSTM 32)
SEARCHED_HIDDEN = (16, 32, 64)


class DistillKDConfig(TechniqueConfig):
    """Train a smaller student on the teacher's softened outputs and the labels."""

    kind: Literal["distill.kd"] = "distill.kd"
    # Fields of models.builders.ModelConfig that define the student, merged over the incoming
    # model's config; None: the same model at half the width (embed_dim, hidden, channels).
    student: dict[str, Any] | None = None
    temperature: float = Field(4.0, gt=0.0)  # T: softens both distributions; Hinton et al. used 1-20
    alpha: float = Field(0.9, ge=0.0, le=1.0)  # weight of the soft (teacher) term; 1 - alpha on the labels
    # The pipeline's later steps (pruning, clustering, ...) fine-tune the student on this same loss instead of
    # the labels alone, as Sanh et al. 2020 prune while distilling: otherwise their fine-tuning pulls the student
    # back toward what labels alone teach it.
    teach_later: bool = Field(False, exclude_if=lambda v: v is False)
    search_stage: ClassVar[SearchStage | None] = "distill"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """Student widths of the reference LSTM (teacher: embedding 32, LSTM 64). The widths are the
        LSTM's fields; a model that reads neither (TinyCNN) gets a same-width student."""
        embed = trial.suggest_categorical(f"{prefix}student_embed_dim", list(SEARCHED_EMBED_DIMS))
        hidden = trial.suggest_categorical(f"{prefix}student_hidden", list(SEARCHED_HIDDEN))
        return {"kind": "distill.kd", "student": {"embed_dim": embed, "hidden": hidden}}

    def search_label(self) -> str:
        s = self.student or {}
        return f"kd-e{s.get('embed_dim', '')}h{s.get('hidden', '')}" if s else "kd-half"


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T² * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels); logits (B, C)."""
    t = temperature
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student_logits / t, dim=-1),
        nn.functional.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",  # the mathematical KL per example; "mean" would divide by C too
        log_target=True,
    )
    hard = nn.functional.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def student_config(cfg: DistillKDConfig, base: Any) -> Any:
    """The student's ModelConfig: `cfg.student` merged over `base` (or `base` at half width)."""
    fields = base.model_dump()
    if cfg.student is None:
        reads = MODEL_SETTINGS.get(str(fields.get("name")), _WIDTH_FIELDS)  # halve only what the model reads
        override = {k: max(1, fields[k] // 2) for k in _WIDTH_FIELDS if k in reads and isinstance(fields.get(k), int)}
    else:
        override = dict(cfg.student)
        if "name" in override and override["name"] != fields.get("name"):
            fields = {"name": override["name"]}  # another model: its own defaults, not the teacher's widths
    try:
        return type(base).model_validate({**fields, **override})
    except ValueError as err:  # pydantic ValidationError: a misspelt or out-of-range student field
        first = str(err).splitlines()
        raise ConfigError(f"distill.kd: invalid student {cfg.student!r}: {' '.join(first[1:3]).strip()}") from err


def _check_context(model: nn.Module, ctx: RunContext) -> tuple[nn.Module, TrainFn]:
    """(teacher, train) of the context; refused without a teacher, a model config or training data."""
    if ctx.teacher is None:
        raise ConfigError(
            "distill.kd needs a trained teacher (ctx.teacher is None); run it through the runner, "
            "which passes the seed's baseline, or set RunContext(teacher=...)"
        )
    if ctx.model_config is None or ctx.input_dim is None or ctx.num_labels is None:
        raise IncompatibleModelError(
            f"distill.kd builds its student from a model config, and none describes this "
            f"{type(model).__name__}; set RunContext(model_config=..., input_dim=..., num_labels=...)"
        )
    if ctx.train is None:
        raise ConfigError("distill.kd trains a student and needs training data; none is available here")
    return ctx.teacher, ctx.train


@dataclass
class _Student:
    """The untrained student, the config that rebuilds it, and the context it trains in."""

    config: Any
    model: nn.Module
    ctx: RunContext  # ctx itself, or the context of another view of the data (the word tokenizer)
    view: str | None = None  # the data view it reads (None: the teacher's own)
    details: dict[str, Any] = field(default_factory=dict)


def _hf_student(cfg: DistillKDConfig, ctx: RunContext, teacher: nn.Module) -> _Student:
    """A transformer teacher's student: fewer layers of itself, or a built-in model on the word tokenizer."""
    student = dict(cfg.student or {})
    # Unnamed: fewer layers of the teacher (nothing named, or `layers`); only widths (the presets'
    # {embed_dim, hidden}): the reference LSTM on the word tokenizer, so one preset runs on any teacher.
    name = student.get("name") or ("hf" if "layers" in student or not student else "lstm")
    if "name" not in student and name == "lstm":
        cfg = cfg.model_copy(update={"student": {**student, "name": "lstm"}})
    if name == "hf":
        extra = sorted(set(student) - {"name", "layers"})
        if extra:
            raise ConfigError(
                f"distill.kd: an hf student takes only `layers` (fewer encoder layers), got {extra}; "
                "for a built-in student name it, e.g. {name: bilstm, embed_dim: 64, hidden: 64}"
            )
        from modelshrink.models.hf import HFClassifier, fewer_layers

        if not isinstance(teacher, HFClassifier):  # internal: an hf config always builds an HFClassifier
            raise TypeError(f"an hf teacher is an HFClassifier, not {type(teacher).__name__}")
        total = int(teacher.model.config.num_hidden_layers)
        layers = student.get("layers", max(1, total // 2))
        if not isinstance(layers, int) or isinstance(layers, bool):
            raise ConfigError(f"distill.kd: student layers must be an integer, got {layers!r}")
        model, kept = fewer_layers(teacher, layers)
        s_cfg = ModelConfig(name="hf", hf_config=model.config_dict(), max_len=ctx.model_config.max_len)
        return _Student(s_cfg, model, ctx, details={"student_layers": layers, "teacher_layers_kept": kept})
    s_cfg = student_config(cfg, ctx.model_config)
    if MODEL_INPUT.get(s_cfg.name, "text") != "text":
        raise ConfigError(f"distill.kd: student {s_cfg.name!r} reads images, an hf teacher's task is text; use "
                          f"{', '.join(n for n, k in MODEL_INPUT.items() if k == 'text' and n != 'hf')}")  # fmt: skip
    if ctx.view_context is None or ctx.teacher_logits is None:
        raise ConfigError(
            f"distill.kd: a {s_cfg.name!r} student of an hf teacher reads its own word tokens, so it needs "
            "the data's 'words' view and the teacher's cached logits; run it through the runner or modelshrink.distill"
        )
    sctx = ctx.view_context("words")
    torch.manual_seed(ctx.seed)  # the student's initial weights, reproducible per seed
    return _Student(s_cfg, build_model(s_cfg, sctx.input_dim or 0, ctx.num_labels or 0), sctx, view="words")


def _build_student(cfg: DistillKDConfig, ctx: RunContext, teacher: nn.Module, n_teacher: int) -> _Student:
    """The untrained student, seeded; refused unless smaller than the teacher."""
    if ctx.input_dim is None or ctx.num_labels is None:  # internal: _check_context refuses such a context first
        raise ValueError("distill.kd needs the context's input_dim and num_labels")
    if getattr(ctx.model_config, "name", None) == "hf":
        built = _hf_student(cfg, ctx, teacher)
    else:
        if (cfg.student or {}).get("name") == "hf":
            raise ConfigError(
                f"distill.kd: a transformer (hf) student is made from an hf teacher's layers; this teacher "
                f"is {ctx.model_config.name!r}: choose a built-in student (lstm, bilstm, ...)"
            )
        s_cfg = student_config(cfg, ctx.model_config)
        torch.manual_seed(ctx.seed)  # the student's initial weights, reproducible per seed
        built = _Student(s_cfg, build_model(s_cfg, ctx.input_dim, ctx.num_labels), ctx)
    n_student = param_count(built.model)
    if n_student >= n_teacher:
        raise ConfigError(
            f"distill.kd: the student {_describe(built.config, short=True)} has {n_student:,} parameters, "
            f"not fewer than the teacher's {n_teacher:,}; choose a smaller student (e.g. lower embed_dim/hidden)"
        )
    return built


def _describe(s_cfg: Any, short: bool = False) -> dict[str, Any]:
    """The student's config for details (`short`: its non-default fields, for messages); an hf
    student's transformers config is left out (its `student_layers` says what changed)."""
    return dict(s_cfg.model_dump(mode="json", exclude_defaults=short, exclude={"hf_config"}))


def _loss(cfg: DistillKDConfig, ctx: RunContext, teacher: nn.Module, timing: dict[str, float]) -> Any:
    """The training loss: kd_loss against the cached teacher logits (looked up by row), or, without a cache
    (a hand-made context), against the teacher run on each batch."""
    if ctx.teacher_logits is not None:
        t0 = time.perf_counter()
        cached = ctx.teacher_logits()  # (N_train, C): computed here the first time, then reused
        timing["seconds"] += time.perf_counter() - t0

        def by_row(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            teacher_logits = cached[torch.from_numpy(rows)].to(xb.device)  # (B, C)
            return with_regularization(net, kd_loss(net(xb), teacher_logits, yb, cfg.temperature, cfg.alpha))

        return RowsLoss(by_row)

    def per_batch(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with torch.no_grad():
            teacher_logits = teacher(xb)  # (B, C), no dropout: the teacher's best guess
        timing["seconds"] += time.perf_counter() - t0
        timing["batches"] += 1
        return with_regularization(net, kd_loss(net(xb), teacher_logits, yb, cfg.temperature, cfg.alpha))

    return per_batch


@register_technique(DistillKDConfig)
def distill_kd(model: nn.Module, cfg: DistillKDConfig, ctx: RunContext) -> TechniqueResult:
    """Knowledge distillation: a smaller student learns from the baseline (teacher) and the labels."""
    teacher, _ = _check_context(model, ctx)
    n_teacher = param_count(teacher)
    student = _build_student(cfg, ctx, teacher, n_teacher)
    train = student.ctx.train
    if train is None:  # internal: a view's context trains like its parent's
        raise ValueError("distill.kd: the student's context offers no training")
    was_training = teacher.training
    teacher.eval()
    timing = {"seconds": 0.0, "batches": 0.0}
    t0 = time.perf_counter()
    loss = _loss(cfg, ctx, teacher, timing)
    try:
        history = train(student.model, loss)
    finally:
        teacher.train(was_training)
    train_seconds = time.perf_counter() - t0
    student.model.eval()
    n_student = param_count(student.model)
    details = {
        "student": _describe(student.config),
        **student.details,
        "student_inputs": "word tokenizer (fitted on train)" if student.view == "words" else "the teacher's",
        "teacher_params": n_teacher,
        "student_params": n_student,
        "params_reduction": round(n_teacher / n_student, 3),  # teacher params / student params
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "epochs": len(history),  # epochs run before early stopping
        "best_val_loss": min((h["val_loss"] for h in history), default=None),
        "train_seconds": round(train_seconds, 2),  # the whole distillation, teacher forwards included
        # The teacher's share: its forwards over the training split (0 when another student computed them).
        "teacher_inference_seconds": round(timing["seconds"], 2),
        "teacher_logits": "cached per row" if ctx.teacher_logits is not None else "per batch",
        "teacher_batches": int(timing["batches"]),  # teacher forwards during training (0 with the cache)
        "teacher_train_seconds": ctx.teacher_train_seconds,  # the baseline's own training (None: unknown)
        "later_steps_fine_tune_on": "this distillation loss" if cfg.teach_later else "the labels",
    }
    return TechniqueResult(model=student.model, details=details, model_config=student.config,
                           input_dim=student.ctx.input_dim, view=student.view,
                           fine_tune_loss=loss if cfg.teach_later else None)  # fmt: skip
