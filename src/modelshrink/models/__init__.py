"""Model builders, looked up by name. Other installed packages add models through the entry-point group
`modelshrink.models` (`builders.register_model`)."""

from modelshrink.models.builders import MODEL_INPUT, MODELS, ModelConfig, build_model, register_model
from modelshrink.models.byo import ModelInputs
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.image import MLP, SmallCNN
from modelshrink.models.lstm import LSTMClassifier
from modelshrink.models.text import CNN1dText, RNNClassifier, TinyTransformer
from modelshrink.registry import load_plugins

__all__ = [
    "CNN1dText", "LSTMClassifier", "MLP", "MODELS", "MODEL_INPUT", "ModelConfig", "ModelInputs", "RNNClassifier",
    "SmallCNN", "TinyCNN", "TinyTransformer", "build_model", "register_model",
]  # fmt: skip

load_plugins("modelshrink.models")  # last: a plugin may import anything above (builders.register_model)
