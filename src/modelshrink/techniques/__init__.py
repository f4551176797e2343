"""Compression techniques. Importing this package registers all of them."""

# Each import registers one technique (the registry is filled by the decorators).
from modelshrink.techniques import (  # noqa: F401
    cluster_kmeans,
    prune_magnitude,
    prune_nm,
    prune_random,
    prune_structured,
    quant_onnx,
)
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
