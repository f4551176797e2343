"""Headless Chromium for the report's browser test: Debian's `chromium`, driven by Playwright.

Playwright's own browser download is not reachable from CI, so the fixture uses the system
Chromium. Tests talk to loopback only, so the fixture never installs it: `make test` does, with
apt-get, when it runs as root (as CI does on a fresh machine). Where Chromium is missing the test
skips with the reason in the summary; set MODELSHRINK_REQUIRE_BROWSER=1 to make that a failure.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _find_chromium() -> str | None:
    return next((p for name in CHROMIUM_NAMES if (p := shutil.which(name))), None)


def _unavailable(reason: str) -> None:
    message = f"BROWSER TEST NOT RUN: {reason}"
    if os.environ.get("MODELSHRINK_REQUIRE_BROWSER"):
        pytest.fail(message)
    warnings.warn(message, stacklevel=2)  # listed in the warnings summary, not only with -rs
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _find_chromium()
    if path is None:
        _unavailable(
            f"no {' / '.join(CHROMIUM_NAMES)} on PATH; install it: `apt-get install -y chromium`, or `make test`"
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the `playwright` package is missing; install the dev extra: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=["--headless", "--no-sandbox"])
        yield b
        b.close()
