"""Compression techniques. Importing this package registers all of them."""

# Each import registers one technique (the registry is filled by the decorators).
from modelshrink.techniques import (  # noqa: F401
    cluster_kmeans,
    distill_kd,
    lowrank,
    prune_magnitude,
    prune_nm,
    prune_random,
    prune_structured,
    quant_onnx,
    quant_qat,
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
from modelshrink.techniques.properties import NM, DistinctValues, Property, Sparsity

__all__ = [
    "NM",
    "TECHNIQUES",
    "DistinctValues",
    "Property",
    "RunContext",
    "SkippedLayer",
    "Sparsity",
    "Technique",
    "TechniqueConfig",
    "TechniqueResult",
    "get_technique",
    "parse_technique_config",
    "register_technique",
]
