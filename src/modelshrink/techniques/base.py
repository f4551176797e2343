"""The technique contract: a typed config, a context, and a result.

A technique is `apply(model, cfg, ctx) -> TechniqueResult`. It gets data, fine-tuning,
seed and calibration inputs only through `ctx`, and ends with a plain `nn.Module`
(masks applied, weights snapped, wrappers removed) so the next technique in a pipeline
sees an ordinary model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from modelshrink.errors import UnknownNameError
from modelshrink.export.formats import ExportFormat  # the format registry's names; export imports no technique
from modelshrink.techniques.properties import Property

# Called after every optimizer step of a fine-tune with the global step count (1-based).
OnStep = Callable[[int], None]
# ctx.fine_tune(model, epochs, on_step, params): trains `model` in place on the task's
# training split with the baseline's recipe (loss, optimizer, batch size). `params`, when
# given, replaces model.parameters() as what the optimizer updates (e.g. cluster centroids).
FineTuneFn = Callable[[nn.Module, int, "OnStep | None", "Sequence[nn.Parameter] | None"], None]

# ctx.train(model, loss_fn): trains `model` from its current weights with the baseline's
# whole recipe (epochs, early stopping on validation loss, best weights restored), with
# `loss_fn(model, inputs, labels)` as the training loss; returns the per-epoch history.
# `loss_fn` may also be a train.RowsLoss, told each batch's row indices into the training split.
TrainFn = Callable[[nn.Module, Any], list[dict[str, float]]]

# The stages of a pipeline `modelshrink search` proposes, in pipeline order: each stage adds at
# most one step. Distillation comes first (it builds a new, smaller model from the teacher);
# architecture changes (structured pruning, vocabulary pruning, low rank, N:M) next, on whatever
# model is there; then unstructured pruning and clustering, whose zeros and shared values the
# later steps keep; quantization last because the ONNX quantizers act at export.
SearchStage = Literal["distill", "structured", "prune", "cluster", "quant"]
SEARCH_STAGES: tuple[SearchStage, ...] = ("distill", "structured", "prune", "cluster", "quant")


class SearchTrial(Protocol):
    """The part of an Optuna trial a search space asks for its parameters (optuna is imported by search only)."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class TechniqueConfig(BaseModel):
    """Base class of every technique's config: frozen, and a misspelt key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    # The search stage this technique may fill (runner/search.py); None: search never proposes it.
    search_stage: ClassVar[SearchStage | None] = None
    # What this technique establishes on the weights ("sparsity", "clusters"); in a searched pipeline a
    # later step whose config has `preserve_<that>` gets it set to True, so it keeps the gain.
    search_establishes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        """One proposed step `{"kind": ..., ...}`, its parameters asked of `trial` as `prefix + name`.

        None: the technique is not searched (the default). The order of the `suggest_*` calls and
        the parameter names decide what the seeded sampler proposes: change them and a search on
        the same seed proposes other pipelines.
        """
        return None

    def search_label(self) -> str:
        """This step's part of a search variant's name, e.g. `int8_dynamic` for quant.int8_dynamic."""
        return self.kind.partition(".")[2] or self.kind


@dataclass
class RunContext:
    """What a technique may use besides the model and its config."""

    example_input: torch.Tensor  # one small batch of model input, e.g. (B, T) token ids
    seed: int = 0
    steps_per_epoch: int = 1  # optimizer steps in one fine-tuning epoch
    fine_tune: FineTuneFn | None = None  # None: no training data available (e.g. library use)
    calibration: Iterable[torch.Tensor] | None = None  # input batches for static quantization
    exclude: tuple[str, ...] = ()  # qualified parameter/module names the user excluded
    # The trained baseline of this seed (eval mode; do not modify) — the teacher for distillation.
    teacher: nn.Module | None = None
    teacher_train_seconds: float | None = None  # what training the teacher cost (None: unknown)
    # The teacher's logits (N_train, labels) on every training row in row order, computed once per
    # teacher and seed and shared by every student and epoch (runner/pipeline.py); None: not offered.
    teacher_logits: Callable[[], torch.Tensor] | None = None
    # A context on another encoding of the same examples (same rows, same order), by name: "words" is
    # the built-in word tokenizer when the run's text goes through a model's own tokenizer (hf). None: none.
    view_context: Callable[[str], RunContext] | None = None
    # The config that rebuilds the model a technique receives (models.builders.ModelConfig) and
    # its input_dim (vocabulary size / input channels); None in library use on a foreign model.
    model_config: Any = None
    input_dim: int | None = None
    num_labels: int | None = None
    train: TrainFn | None = None  # None: no training data available (e.g. library use)
    # Where fine_tune/train run (--device): the model a technique receives is already there, and
    # fine_tune leaves it there; tensors a technique makes should follow the weights' device.
    device: str = "cpu"
    # The training rows (N, T) as the model reads them (vocabulary pruning counts the ids it sees) and the
    # data's preprocessing (an hf model's tokenizer.json: its special and [UNK] ids); None: not offered.
    train_inputs: Callable[[], np.ndarray] | None = None
    preprocessing: dict[str, Any] | None = None


@dataclass
class SkippedLayer:
    """A layer (or tensor) a technique did not change, and why."""

    name: str
    type: str
    reason: str


@dataclass
class TechniqueResult:
    """The changed model, what was skipped, what it establishes, and technique-specific figures."""

    model: nn.Module
    skipped: list[SkippedLayer] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable only
    # What the technique establishes on the weights it leaves (sparsity, <= k values, N:M); the
    # runner checks each after every later step and on the exported files (runner/checks.py).
    properties: list[Property] = field(default_factory=list)
    # Set by post-training quantization techniques: how the exporter must write the model.
    # None leaves the format chosen by an earlier step (default float32).
    export_format: ExportFormat | None = None
    # Set by techniques that change the architecture (structured pruning, distillation, low rank):
    # the ModelConfig (and input_dim) that rebuilds the returned model, e.g. for the compact file.
    # None: the architecture is unchanged.
    model_config: Any = None
    input_dim: int | None = None
    # Set by a technique whose model reads another encoding of the data (a distilled student with its
    # own tokenizer: "words"); the runner measures it on that view (TaskData.views). None: unchanged.
    view: str | None = None
    # Set by distill.kd with `teach_later`: the loss the pipeline's later steps fine-tune with (ctx.fine_tune)
    # instead of the labels' cross-entropy. None: unchanged (the labels, or an earlier step's loss).
    fine_tune_loss: Any = None


ApplyFn = Callable[[nn.Module, Any, RunContext], TechniqueResult]


@dataclass(frozen=True)
class Technique:
    kind: str
    config_cls: type[TechniqueConfig]
    apply: ApplyFn
    summary: str


TECHNIQUES: dict[str, Technique] = {}


def register_technique(config_cls: type[TechniqueConfig]) -> Callable[[ApplyFn], ApplyFn]:
    """Register `fn` as the technique named by `config_cls`'s `kind` default."""
    kind = config_cls.model_fields["kind"].default
    if not isinstance(kind, str):
        raise TypeError(f"{config_cls.__name__}.kind needs a string default")

    def wrap(fn: ApplyFn) -> ApplyFn:
        if kind in TECHNIQUES:
            from modelshrink.errors import RegistryError

            raise RegistryError(f"technique {kind!r} already registered in {TECHNIQUES[kind].apply.__module__}")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        TECHNIQUES[kind] = Technique(kind, config_cls, fn, summary)
        return fn

    return wrap


def require_fine_tuning(ctx: RunContext, kind: str, epochs: int, without: str) -> None:
    """Refuse `epochs` > 0 when the context has no training data; `without` names the epochs=0 mode."""
    if epochs > 0 and ctx.fine_tune is None:
        from modelshrink.errors import ConfigError

        raise ConfigError(
            f"{kind} with epochs={epochs} needs fine-tuning, which needs training data, "
            f"and none is available here; use epochs=0 {without}"
        )


def get_technique(kind: str) -> Technique:
    if kind not in TECHNIQUES:
        raise UnknownNameError(f"unknown technique {kind!r}; known: {', '.join(sorted(TECHNIQUES))}")
    return TECHNIQUES[kind]


def parse_technique_config(raw: dict[str, Any] | TechniqueConfig) -> TechniqueConfig:
    """Validate a `{kind: ..., ...}` mapping against the registered technique's config."""
    if isinstance(raw, TechniqueConfig):
        return raw
    if not isinstance(raw, dict) or "kind" not in raw:
        raise UnknownNameError(f"a technique step needs a 'kind'; got {raw!r}; known: {', '.join(sorted(TECHNIQUES))}")
    return get_technique(str(raw["kind"])).config_cls.model_validate(raw)
