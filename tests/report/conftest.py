"""Headless Chromium for the report's browser test: Debian's `chromium`, driven by Playwright.

Playwright's own browser download is not reachable from CI, so the fixture uses the system
Chromium and installs it with apt-get when it is missing and the tests run as root (CI runs
`make test` as root on a fresh machine). It skips, with the reason in the test summary, only
where Chromium truly cannot be installed; set MODELSHRINK_REQUIRE_BROWSER=1 to make that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _find_chromium() -> str | None:
    return next((p for name in CHROMIUM_NAMES if (p := shutil.which(name))), None)


def _apt_install() -> str:
    """Install Debian's chromium; returns what went wrong ("" on success)."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this machine"
    if os.geteuid() != 0:
        return "not running as root, so apt-get cannot install chromium (run `apt-get install -y chromium`)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    for cmd in (install, ["apt-get", "update"], install):  # update only when the first try fails
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        if done.returncode == 0 and cmd is install and _find_chromium():
            return ""
    return f"`apt-get install chromium` failed: {(done.stderr or done.stdout).strip()[-300:]}"


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
        problem = _apt_install()
        path = _find_chromium()
        if path is None:
            _unavailable(problem or "chromium installed but not found on PATH")
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
