"""Measurements of models and artifacts: size (this package), accuracy and latency."""

from modelshrink.measure.size import file_sizes, model_stats

__all__ = ["file_sizes", "model_stats"]
