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
to keep its weight independent of T. The teacher runs in eval mode (no dropout) on every
training batch; its forward time is measured and reported next to the student's size gain.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models.builders import MODEL_SETTINGS, build_model  # techniques → models: the allowed direction
from modelshrink.techniques.base import (
    RunContext,
    SearchStage,
    SearchTrial,
    TechniqueConfig,
    TechniqueResult,
    TrainFn,
    register_technique,
)

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
    if getattr(ctx.model_config, "name", None) == "hf":  # a smaller transformer student is not built yet
        raise IncompatibleModelError(
            "distill.kd cannot build a smaller student of an hf (transformers) model yet; "
            "its student sizes (embed_dim, hidden) are the built-in models' settings"
        )
    if ctx.train is None:
        raise ConfigError("distill.kd trains a student and needs training data; none is available here")
    return ctx.teacher, ctx.train


def _build_student(cfg: DistillKDConfig, ctx: RunContext, n_teacher: int) -> tuple[Any, nn.Module]:
    """(its ModelConfig, the untrained student), seeded; refused unless smaller than the teacher."""
    if ctx.input_dim is None or ctx.num_labels is None:  # internal: _check_context refuses such a context first
        raise ValueError("distill.kd needs the context's input_dim and num_labels")
    s_cfg = student_config(cfg, ctx.model_config)
    torch.manual_seed(ctx.seed)  # the student's initial weights, reproducible per seed
    student = build_model(s_cfg, ctx.input_dim, ctx.num_labels)
    n_student = param_count(student)
    if n_student >= n_teacher:
        raise ConfigError(
            f"distill.kd: the student {s_cfg.model_dump(exclude_defaults=True)} has {n_student:,} parameters, "
            f"not fewer than the teacher's {n_teacher:,}; choose a smaller student (e.g. lower embed_dim/hidden)"
        )
    return s_cfg, student


@register_technique(DistillKDConfig)
def distill_kd(model: nn.Module, cfg: DistillKDConfig, ctx: RunContext) -> TechniqueResult:
    """Knowledge distillation: a smaller student learns from the baseline (teacher) and the labels."""
    teacher, train = _check_context(model, ctx)
    n_teacher = param_count(teacher)
    s_cfg, student = _build_student(cfg, ctx, n_teacher)
    n_student = param_count(student)

    was_training = teacher.training
    teacher.eval()
    teacher_seconds = 0.0
    teacher_batches = 0

    def loss_fn(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        nonlocal teacher_seconds, teacher_batches
        t0 = time.perf_counter()
        with torch.no_grad():
            teacher_logits = teacher(xb)  # (B, C), no dropout: the teacher's best guess
        teacher_seconds += time.perf_counter() - t0
        teacher_batches += 1
        loss = kd_loss(net(xb), teacher_logits, yb, cfg.temperature, cfg.alpha)
        reg = getattr(net, "regularization_loss", None)  # the student keeps the baseline's L2 recipe
        return loss + reg() if callable(reg) else loss

    t0 = time.perf_counter()
    try:
        history = train(student, loss_fn)
    finally:
        teacher.train(was_training)
    train_seconds = time.perf_counter() - t0
    student.eval()
    details = {
        "student": s_cfg.model_dump(mode="json"),
        "teacher_params": n_teacher,
        "student_params": n_student,
        "params_reduction": round(n_teacher / n_student, 3),  # teacher params / student params
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "epochs": len(history),  # epochs run before early stopping
        "best_val_loss": min((h["val_loss"] for h in history), default=None),
        "train_seconds": round(train_seconds, 2),  # the whole distillation, teacher forwards included
        "teacher_inference_seconds": round(teacher_seconds, 2),  # the teacher's share: its cost per run
        "teacher_batches": teacher_batches,
        "teacher_train_seconds": ctx.teacher_train_seconds,  # the baseline's own training (None: unknown)
    }
    return TechniqueResult(model=student, details=details, model_config=s_cfg, input_dim=ctx.input_dim)
