"""Property-based fuzzing (hypothesis) of the compact loader and the config parser (fuzz.py).

A damaged .msz and a random YAML config either load or raise modelshrink's own error, never anything else,
never past the time bound, never past the memory bound. `make test` runs a fixed set of examples;
`make fuzz` (MODELSHRINK_FUZZ_EXAMPLES=N) a longer, freshly random run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="the fuzzer needs hypothesis (the dev extra)")

from hypothesis import given  # noqa: E402

from .fuzz import bounded, damaged_msz, fuzz_settings, only_own_errors, seed_files, yaml_texts  # noqa: TID252, E402


def test_seed_files_load() -> None:
    """The undamaged seeds load in both readers: the fuzzer starts from files that work."""
    from modelshrink import runtime
    from modelshrink.export.compact import load_model

    with tempfile.TemporaryDirectory() as tmp:
        for kind, data in seed_files().items():
            path = Path(tmp) / f"{kind}.msz"
            path.write_bytes(data)
            load_model(path)
            assert runtime.load(path).labels == ["x", "y", "z"]


@fuzz_settings(ci_examples=100)
@given(damaged_msz())
def test_compact_loader_fuzz(data: bytes) -> None:
    from modelshrink import runtime
    from modelshrink.export.compact import load_model, read_compact_header
    from modelshrink.runtime import session  # noqa: F401 - imported before the bounds (ONNX Runtime's import)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.msz"
        path.write_bytes(data)
        with bounded("compact"):
            only_own_errors(lambda: read_compact_header(path))
            only_own_errors(lambda: load_model(path))
            only_own_errors(lambda: runtime.load(path))


@fuzz_settings(ci_examples=40)
@given(yaml_texts())
def test_config_parser_fuzz(text: str) -> None:
    from modelshrink.config import Overrides, resolve

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        with bounded("config"):
            only_own_errors(lambda: resolve("quick", path, Overrides()))
