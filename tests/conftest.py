"""Shared fixtures: the real data set's path (CI sets it), tiny models, a tiny run context."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def real_data_path() -> Path | None:
    """The real emotion data set, through $MODELSHRINK_DATA (CI's .ci/run sets it); None when unset."""
    env = os.environ.get("MODELSHRINK_DATA")
    return Path(env) if env and Path(env).is_file() else None


@pytest.fixture(scope="session")
def emotions_csv() -> Path:
    path = real_data_path()
    if path is None:
        if os.environ.get("MODELSHRINK_REQUIRE_DATA"):
            pytest.fail("MODELSHRINK_REQUIRE_DATA is set but emotions.csv was not found; set MODELSHRINK_DATA")
        pytest.skip("emotions.csv not found; set MODELSHRINK_DATA to run the end-to-end tests")
    return path


@pytest.fixture(autouse=True)
def _quick_measurement(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows measured in this process time each file's latency for ~2 ms, not 0.15 s, and start no
    memory subprocess per file (~1-3 s each): most tests check what a row holds, not its timings.
    A test that checks latency or memory figures of a row is marked `full_measure`. (A CLI run in a
    child process measures in full: the patch does not reach it.)"""
    if request.node.get_closest_marker("full_measure"):
        return
    from modelshrink.runner import timing

    monkeypatch.setattr(timing, "LATENCY_BUDGET_S", 0.002)
    monkeypatch.setattr(timing, "MEASURE_MEMORY", False)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never read or write the user's cache (~/.cache/modelshrink).
    monkeypatch.setenv("MODELSHRINK_CACHE", str(tmp_path_factory.mktemp("cache")))
