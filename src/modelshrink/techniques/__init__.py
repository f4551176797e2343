"""Compression techniques. Importing this package registers all of them.

Every module of this package whose name has no leading underscore and is not a shared piece
(base, properties) holds techniques, registered by their `@register_technique` decorators
when imported here: adding a technique is adding its module, nothing else in this package.
Other installed packages add techniques through the entry-point group `modelshrink.techniques`.
"""

import importlib
import pkgutil

from modelshrink.registry import load_plugins
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

_SHARED = {"base", "properties"}
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module not in _SHARED:
        importlib.import_module(f"{__name__}.{_module}")
load_plugins("modelshrink.techniques")  # techniques other installed packages declare (registry.load_plugins)

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
