"""docs/reliability.md's generated part is the corpus and its messages and the fuzz counts of this session's run
(MODELSHRINK_UPDATE_DOCS=1 pytest tests/hostile rewrites it). Named to run after test_corpus.py and test_fuzz.py."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("hypothesis", reason="the fuzz counts need hypothesis (the dev extra)")

from . import fuzz  # noqa: TID252, E402 - a package of tests
from .cases import CASES, KNOWN_HOLES, SLOW_HOLES  # noqa: TID252, E402
from .reliability_doc import DOC, MESSAGES, render  # noqa: TID252, E402


def test_reliability_doc_is_current() -> None:
    if len(MESSAGES) != len(CASES) or set(fuzz.COUNTS) != {"compact", "config"}:
        pytest.skip("the doc is checked when the whole corpus and both fuzz tests ran in this session")
    if fuzz.PROFILE != "ci":
        pytest.skip("make fuzz: the doc quotes the fixed-seed counts of make test")
    bounds = f"within {fuzz.TIME_LIMIT_S:g} s and {fuzz.MEMORY_LIMIT >> 20} MiB each"
    text = render(CASES, MESSAGES, DOC.read_text() if DOC.is_file() else "", set(KNOWN_HOLES) | set(SLOW_HOLES),
                  dict(fuzz.COUNTS), bounds)  # fmt: skip
    if os.environ.get("MODELSHRINK_UPDATE_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/reliability.md is stale: run MODELSHRINK_UPDATE_DOCS=1 pytest tests/hostile"
