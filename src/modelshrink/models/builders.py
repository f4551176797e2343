"""Build a model by name from a typed config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from modelshrink.models.cnn import TinyCNN
from modelshrink.models.lstm import LSTMClassifier
from modelshrink.registry import Registry


def _unset(value: object) -> bool:
    # Fields added after run folders existed are left out of dumps while unset, so the
    # config hashes (baseline cache, result keys) of configs that do not use them stay the same.
    return value is None


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["lstm", "cnn"] = "lstm"
    embed_dim: int = Field(32, ge=1, description="lstm: embedding width")
    hidden: int = Field(64, ge=1, description="lstm: LSTM units")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="lstm: dropout before the classifier")
    l2_input: float = Field(1e-3, ge=0.0, description="lstm: L2 weight on the LSTM input weights")
    channels: int = Field(8, ge=1, description="cnn: channels of the first convolution")
    # Set by prune.structured (None: the unpruned shape).
    vocab_keep: int | None = Field(
        None, ge=2, exclude_if=_unset, description="lstm: embedding rows kept; ids >= it read as OOV (1)"
    )
    channels2: int | None = Field(
        None, ge=1, exclude_if=_unset, description="cnn: channels of the second convolution (2*channels)"
    )


# A builder takes (config, vocab_size or input channels, number of labels).
Builder = Callable[[ModelConfig, int, int], nn.Module]
MODELS: Registry[Builder] = Registry("model")


@MODELS.register("lstm")
def _lstm(cfg: ModelConfig, vocab_size: int, num_labels: int) -> nn.Module:
    return LSTMClassifier(vocab_size, num_labels, cfg.embed_dim, cfg.hidden, cfg.dropout, cfg.l2_input, cfg.vocab_keep)


@MODELS.register("cnn")
def _cnn(cfg: ModelConfig, in_channels: int, num_labels: int) -> nn.Module:
    return TinyCNN(num_labels, cfg.channels, in_channels, cfg.channels2)


def build_model(cfg: ModelConfig, input_dim: int, num_labels: int) -> nn.Module:
    """`input_dim` is the vocabulary size for text models, input channels for image models."""
    return MODELS.get(cfg.name)(cfg, input_dim, num_labels)
