"""modelshrink: compare compression techniques on a real model and data, honestly measured.

Library use: `modelshrink.compare(build_fn, data, variants)` for the whole comparison, or the
techniques as functions on a model in hand: `modelshrink.prune(model, sparsity=0.5)`,
`cluster`, `quantize`, `distill` (see docs/byo.md). The registry underneath:
`from modelshrink.techniques import get_technique`.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Results", "cluster", "compare", "distill", "prune", "quantize"]

if TYPE_CHECKING:
    from modelshrink.api import Results, cluster, compare, distill, prune, quantize


def __getattr__(name: str) -> Any:
    # Lazy: `import modelshrink` (and `modelshrink --help`) must not import torch.
    if name in __all__:
        from modelshrink import api

        return getattr(api, name)
    raise AttributeError(f"module 'modelshrink' has no attribute {name!r}")
