"""Model builders, looked up by name."""

from modelshrink.models.builders import MODELS, ModelConfig, build_model
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.lstm import LSTMClassifier

__all__ = ["MODELS", "LSTMClassifier", "ModelConfig", "TinyCNN", "build_model"]
