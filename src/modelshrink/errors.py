"""One hierarchy of errors the user can act on. The CLI prints their message and exits 2."""

# The base class and ArtifactError are defined with the torch-free runtime, which raises them.
from modelshrink.runtime.errors import ArtifactError, ModelshrinkError

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "IncompatibleModelError",
    "ModelshrinkError",
    "RegistryError",
    "UnknownNameError",
]


class ConfigError(ModelshrinkError, ValueError):
    """A configuration value is out of range, misspelt or inconsistent."""


class DataError(ModelshrinkError, ValueError):
    """Input data is missing, unreadable or unusable for the task."""


class UnknownNameError(ModelshrinkError, LookupError):
    """A registry lookup failed; the message lists the known names."""


class IncompatibleModelError(ModelshrinkError):
    """A technique found nothing it can handle in the model."""


class RegistryError(ModelshrinkError):
    """A name was registered twice."""
