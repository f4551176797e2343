"""The results store, its own package: the runner writes it and the report reads it, so neither imports the other."""

from modelshrink.store.sqlite import APP, COLUMNS, SCHEMA_VERSION, ResultStore, config_key

__all__ = ["APP", "COLUMNS", "SCHEMA_VERSION", "ResultStore", "config_key"]
