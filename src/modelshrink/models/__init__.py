"""Model builders, looked up by name."""

from modelshrink.models.builders import MODEL_INPUT, MODELS, ModelConfig, build_model
from modelshrink.models.byo import ModelInputs
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.image import MLP, SmallCNN
from modelshrink.models.lstm import LSTMClassifier
from modelshrink.models.text import CNN1dText, RNNClassifier, TinyTransformer

__all__ = [
    "CNN1dText", "LSTMClassifier", "MLP", "MODELS", "MODEL_INPUT", "ModelConfig", "ModelInputs", "RNNClassifier",
    "SmallCNN", "TinyCNN", "TinyTransformer", "build_model",
]  # fmt: skip
