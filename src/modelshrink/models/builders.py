"""Build a model by name from a typed config.

Built-in models read either text (token ids: `input_dim` is the vocabulary size) or images
(`input_dim` is the number of channels). `name: custom` with `build: path/to/file.py:function`
builds the user's own model (see `modelshrink.models.byo`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from modelshrink.errors import ConfigError, RegistryError
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.image import MLP, SmallCNN
from modelshrink.models.lstm import LSTMClassifier
from modelshrink.models.text import CNN1dText, RNNClassifier, TinyTransformer
from modelshrink.registry import Registry

if TYPE_CHECKING:
    from modelshrink.data.tasks import TaskData, TextEncoder

InputKind = Literal["text", "image"]
# What each built-in model reads; a task's data must match (checked before training).
MODEL_INPUT: dict[str, InputKind] = {
    "lstm": "text", "gru": "text", "bilstm": "text", "cnn1d-text": "text", "transformer-tiny": "text",
    "cnn": "image", "cnn-small": "image", "mlp": "image", "hf": "text",
}  # fmt: skip
# The settings each model reads; setting another one (away from its default) is an error, not silently ignored.
MODEL_SETTINGS: dict[str, tuple[str, ...]] = {
    "lstm": ("embed_dim", "hidden", "dropout", "l2_input", "embed_rank", "fc_rank", "vocab_keep"),
    "gru": ("embed_dim", "hidden", "dropout"),
    "bilstm": ("embed_dim", "hidden", "dropout"),
    "cnn1d-text": ("embed_dim", "channels", "kernel_size", "dropout"),
    "transformer-tiny": ("embed_dim", "heads", "layers", "hidden", "max_positions", "dropout"),
    "cnn": ("channels", "channels2"),
    "cnn-small": ("channels", "dropout"),
    "mlp": ("image_size", "hidden", "layers", "dropout"),
    "custom": ("build",),
    "hf": ("path", "max_len", "hf_config"),
}


def _unset(value: object) -> bool:
    # Fields added after run folders existed are left out of dumps while unset, so the
    # config hashes (baseline cache, result keys) of configs that do not use them stay the same.
    return value is None


def _registered_names(schema: dict[str, Any]) -> None:
    # The JSON Schema lists the models registered when it is made (plugins' included), so editors complete them.
    schema["enum"] = MODELS.names()


def _equals(default: object) -> Callable[[object], bool]:
    # Settings added after run folders existed are left out of dumps at their defaults, for the
    # same reason as `_unset`: configs that do not use them keep their hashes.
    return lambda value: value == default


class ModelConfig(BaseModel):
    """Which model, and its sizes. Each field says which models read it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A str checked against the registry (not a Literal), so other packages' models (entry-point group
    # `modelshrink.models`) are accepted; a str dumps as the Literal did, so config hashes are unchanged.
    name: str = Field(
        "lstm", description="a registered model (`modelshrink list`), or 'custom' with `build`",
        json_schema_extra=_registered_names,
    )  # fmt: skip
    embed_dim: int = Field(32, ge=1, description="lstm, gru, bilstm, cnn1d-text, transformer-tiny: embedding width")
    hidden: int = Field(64, ge=1, description="lstm, gru, bilstm: units; transformer-tiny: FFN width; mlp: layer width")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout before the classifier (all but cnn)")
    l2_input: float = Field(1e-3, ge=0.0, description="lstm: L2 weight on the LSTM input weights")
    channels: int = Field(8, ge=1, description="cnn, cnn-small: channels of the first convolution; cnn1d-text: filters")
    kernel_size: int = Field(3, ge=1, exclude_if=_equals(3), description="cnn1d-text: convolution width in tokens")
    heads: int = Field(
        2, ge=1, exclude_if=_equals(2), description="transformer-tiny: attention heads (must divide embed_dim)"
    )
    layers: int = Field(
        1, ge=1, exclude_if=_equals(1), description="transformer-tiny: encoder blocks; mlp: hidden layers"
    )
    max_positions: int = Field(
        256, ge=1, exclude_if=_equals(256), description="transformer-tiny: longest sequence with its own position"
    )
    image_size: int = Field(8, ge=1, exclude_if=_equals(8), description="mlp: input images are image_size x image_size")
    build: str | None = Field(
        None, exclude_if=_unset, description="custom: 'path/to/file.py:function' returning an nn.Module"
    )
    path: str | None = Field(
        None, exclude_if=_unset, description="hf: a transformers folder (or ORG/NAME on the Hub): --model hf:PATH"
    )
    max_len: int | None = Field(
        None, ge=2, exclude_if=_unset, description="hf: tokens per text (default min(128, its position embeddings))"
    )
    hf_config: dict[str, Any] | None = Field(
        None, exclude_if=_unset, description="hf: the transformers config; rebuilds the model with no folder (files)"
    )
    # Set by techniques that change the architecture (None: the unchanged shape; left out of dumps).
    embed_rank: int | None = Field(
        None, ge=1, exclude_if=_unset, description="lstm: embedding factored as (vocab×r)·(r×embed_dim)"
    )
    fc_rank: int | None = Field(
        None, ge=1, exclude_if=_unset, description="lstm: classifier factored as (hidden×r)·(r×labels)"
    )
    vocab_keep: int | None = Field(
        None, ge=2, exclude_if=_unset, description="lstm: embedding rows kept; ids >= it read as OOV (1)"
    )
    channels2: int | None = Field(
        None, ge=1, exclude_if=_unset, description="cnn: channels of the second convolution (2*channels)"
    )
    # Every model: the user's trained weights (models/checkpoint.py); the baseline is then measured, not trained.
    weights: str | None = Field(
        None, exclude_if=_unset, description="all models: a .safetensors / .pt / .pth state dict to start from"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS.names())}")
        return name

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.name == "custom" and not self.build:
            raise ValueError("model 'custom' needs `build: path/to/file.py:function` (or --model FILE.py:FUNCTION)")
        if self.name == "hf" and not (self.path or self.hf_config):
            raise ValueError("model 'hf' needs `path: folder` (or --model hf:PATH)")
        if self.name != "custom" and self.build:
            raise ValueError(
                f"`build` is only read by model 'custom', not {self.name!r}; remove it or set name: custom"
            )
        defaults = ModelConfig.model_fields
        unused = [f for f in self.model_fields_set - {"name", "weights"}
                  if f not in MODEL_SETTINGS.get(self.name, ()) and getattr(self, f) != defaults[f].default]  # fmt: skip
        if unused:
            raise ValueError(
                f"model {self.name!r} does not read {', '.join(sorted(unused))}; "
                f"its settings are: {', '.join(MODEL_SETTINGS.get(self.name, ())) or 'none'}"
            )
        if self.name == "transformer-tiny" and self.embed_dim % self.heads:
            raise ValueError(f"transformer-tiny: heads ({self.heads}) must divide embed_dim ({self.embed_dim})")
        return self


# A builder takes (config, vocab_size or input channels, number of labels).
Builder = Callable[[ModelConfig, int, int], nn.Module]
MODELS: Registry[Builder] = Registry("model")


def register_model(name: str, reads: InputKind, settings: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Register a model builder, e.g. from another package (entry-point group `modelshrink.models`), so
    `model: {name: NAME}` and `--model NAME` build it.

    `reads`: "text" (token ids; the builder's input_dim is the vocabulary size) or "image" (input_dim is the
    number of channels). `settings`: the ModelConfig fields the builder reads; setting another one is refused."""
    if reads not in ("text", "image"):
        raise RegistryError(f"model {name!r}: reads must be 'text' or 'image', got {reads!r}")
    unknown = [s for s in settings if s not in ModelConfig.model_fields or s == "name"]
    if unknown:
        raise RegistryError(
            f"model {name!r}: unknown settings {', '.join(unknown)}; ModelConfig has: "
            f"{', '.join(f for f in ModelConfig.model_fields if f != 'name')}"
        )

    def wrap(builder: Builder) -> Builder:
        MODELS.add(name, builder)  # an existing name: RegistryError
        MODEL_INPUT[name], MODEL_SETTINGS[name] = reads, tuple(settings)
        return builder

    return wrap


@MODELS.register("lstm")
def _lstm(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    return LSTMClassifier(vocab_size, num_labels, cfg.embed_dim, cfg.hidden, cfg.dropout, cfg.l2_input,
                          cfg.embed_rank, cfg.fc_rank, cfg.vocab_keep)  # fmt: skip


@MODELS.register("gru")
def _gru(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    return RNNClassifier(vocab_size, num_labels, "gru", cfg.embed_dim, cfg.hidden, cfg.dropout)


@MODELS.register("bilstm")
def _bilstm(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    return RNNClassifier(vocab_size, num_labels, "lstm", cfg.embed_dim, cfg.hidden, cfg.dropout, bidirectional=True)


@MODELS.register("cnn1d-text")
def _cnn1d_text(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    return CNN1dText(vocab_size, num_labels, cfg.embed_dim, cfg.channels, cfg.kernel_size, cfg.dropout)


@MODELS.register("transformer-tiny")
def _transformer_tiny(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    return TinyTransformer(vocab_size, num_labels, cfg.embed_dim, cfg.heads, cfg.layers, cfg.hidden,
                           cfg.max_positions, cfg.dropout)  # fmt: skip


@MODELS.register("cnn")
def _cnn(cfg: ModelConfig, in_channels: int, num_labels: int) -> nn.Module:
    return TinyCNN(num_labels, cfg.channels, in_channels, cfg.channels2)


@MODELS.register("cnn-small")
def _cnn_small(cfg: ModelConfig, in_channels: int, num_labels: int) -> nn.Module:
    return SmallCNN(in_channels, num_labels, cfg.channels, cfg.dropout)


@MODELS.register("mlp")
def _mlp(cfg: ModelConfig, in_channels: int, num_labels: int) -> nn.Module:
    return MLP(in_channels, num_labels, cfg.image_size, cfg.hidden, cfg.layers, cfg.dropout)


@MODELS.register("custom")
def _custom(cfg: ModelConfig, input_dim: int, num_labels: int) -> nn.Module:
    from modelshrink.models.byo import build_custom

    return build_custom(cfg.build or "", input_dim, num_labels)


@MODELS.register("hf")
def _hf(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    from modelshrink.models.hf import build_hf

    return build_hf(cfg.path, cfg.hf_config, num_labels)


def build_model(cfg: ModelConfig, input_dim: int, num_labels: int) -> nn.Module:
    """`input_dim` is the vocabulary size for text models, input channels for image models."""
    return MODELS.get(cfg.name)(cfg, input_dim, num_labels)


def check_model_fits(cfg: ModelConfig, data: TaskData) -> None:
    """Raise ConfigError, before any training, when the model cannot read the task's arrays."""
    reads = MODEL_INPUT.get(cfg.name)
    if reads is not None and reads != data.kind:
        fits = ", ".join(n for n, k in MODEL_INPUT.items() if k == data.kind)
        raise ConfigError(
            f"the data ({data.source}) gives {data.kind}s but model {cfg.name!r} reads {reads}; "
            f"use one of: {fits} (--model NAME or `model: {{name: ...}}` in the config)"
        )
    if cfg.name == "mlp" and tuple(data.x_train.shape[2:]) != (cfg.image_size, cfg.image_size):
        raise ConfigError(
            f"model 'mlp' reads {cfg.image_size}x{cfg.image_size} images but the task's are "
            f"{'x'.join(map(str, data.x_train.shape[2:]))}; set model.image_size (or data.image_size) to match"
        )
    if cfg.weights is not None:  # keys and shapes checked now, before any file is written
        from modelshrink.models.checkpoint import load_weights

        load_weights(build_model(cfg, data.input_dim, data.num_labels), cfg.weights)
    if cfg.name == "custom":  # the user's model: one forward pass now, so a mistake fails before training
        import torch

        model = build_model(cfg, data.input_dim, data.num_labels).eval()
        x = torch.from_numpy(data.x_train[:2])
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as err:  # the user's forward failed: say on what input
            raise ConfigError(
                f"model from {cfg.build!r} failed on a batch of the task's input (shape {list(x.shape)}, "
                f"{x.dtype}): {type(err).__name__}: {err}"
            ) from err
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), data.num_labels):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"model from {cfg.build!r} returned {got} for input shape {list(x.shape)}; it must return "
                f"logits of shape [batch, {data.num_labels}] (the task has {data.num_labels} labels)"
            )


def pretrained(cfg: ModelConfig, labels: list[str]) -> bool:
    """Whether the baseline's weights are already trained for `labels` (then it is measured, not trained):
    the user gave weights (`--weights`), or an hf folder's head already classifies these labels."""
    if cfg.weights is not None:
        return True
    if cfg.name == "hf" and cfg.path and cfg.hf_config is None:
        from modelshrink.models.hf import is_pretrained

        return is_pretrained(cfg.path, labels)
    return False


def fresh_head(model: nn.Module, labels: list[str]) -> None:
    """A model that brings a trained head for other labels (hf) gets a new one for `labels`."""
    new_head = getattr(model, "new_head", None)
    if callable(new_head):
        new_head(labels)


def text_encoder(cfg: ModelConfig) -> TextEncoder | None:
    """The model's own tokenizer for the task's text (hf), or None: the word tokenizer fitted on train."""
    if cfg.name == "hf" and cfg.path:
        from modelshrink.models.hf import text_encoder as hf_encoder

        return hf_encoder(cfg.path, cfg.max_len)
    return None


def model_fingerprint(cfg: ModelConfig) -> str | None:
    """SHA-256 of the files the model is read from (an hf folder), for the run's identity; None: none."""
    if cfg.name == "hf" and cfg.path:
        from modelshrink.models.hf import folder_sha256, resolve_folder

        return folder_sha256(resolve_folder(cfg.path))
    return None


def saved_config(cfg: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The model config a saved file records: an hf model's transformers config goes in, so the file
    rebuilds it with no folder (and no code from one)."""
    config_dict = getattr(model, "config_dict", None)
    if cfg.get("name") == "hf" and callable(config_dict):
        return {**{k: v for k, v in cfg.items() if k != "path"}, "hf_config": config_dict()}
    return cfg
