"""Shared by the browser tests: the Debian chromium that Playwright drives (never a downloaded one)."""

from __future__ import annotations

import os
import shutil

import pytest

# Headless chromium on a small container: /dev/shm is tiny and there is no GPU.
CHROMIUM_ARGS = ["--disable-dev-shm-usage", "--disable-gpu"]


def chromium_executable() -> str:
    """The Debian chromium binary, or skip/fail with the reason it is missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    why = "the Debian `chromium` package is not installed"
    if os.environ.get("CI") or shutil.which("apt-get"):
        # Installable here (the Makefile's set-up runs `apt-get install -y chromium`): a missing
        # browser is a broken set-up, never a reason to skip.
        pytest.fail(f"{why}; run `make setup` or `apt-get install -y chromium`")
    pytest.skip(f"{why} and this machine has no apt-get to install it")
