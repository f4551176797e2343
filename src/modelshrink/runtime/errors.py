"""The two error classes the runtime raises; modelshrink.errors builds its hierarchy on them.

They live here so that `modelshrink.runtime` (and the separate `modelshrink-runtime`
distribution) needs nothing else of modelshrink; `modelshrink.errors` re-exports both, so
there is still one hierarchy and the CLI's one-line, exit-2 handling covers the runtime.
"""


class ModelshrinkError(Exception):
    """Base class: an error the user can act on."""


class ArtifactError(ModelshrinkError):
    """A model file is missing, corrupt, or of an unsupported version."""
