"""Compression techniques. Importing this package registers all of them."""

# Each import registers one technique (the registry is filled by the decorators).
from modelshrink.techniques import cluster_kmeans, prune_magnitude, quant_onnx  # noqa: E402,F401
from modelshrink.techniques import prune_nm, prune_random, prune_structured  # noqa: E402,F401
from modelshrink.techniques.base import (
    TECHNIQUES,
    RunContext,
    SkippedLayer,
    Technique,
    TechniqueConfig,
    TechniqueResult,
    get_technique,
    parse_technique_config,
    register_technique,
)

__all__ = [
    "TECHNIQUES",
    "RunContext",
    "SkippedLayer",
    "Technique",
    "TechniqueConfig",
    "TechniqueResult",
    "get_technique",
    "parse_technique_config",
    "register_technique",
]
