"""modelshrink: compare compression techniques on a real model and data, honestly measured.

Library use: `from modelshrink.techniques import get_technique`, then
`get_technique("prune.magnitude").apply(model, cfg, ctx)`.
"""

__version__ = "0.1.0"
