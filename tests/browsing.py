"""Debian's Chromium driven by Playwright for Python, for the browser tests (no browser download:
`executable_path` points at /usr/bin/chromium, which .ci/run installs with apt)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless as root, and quiet: without the background-networking flags Chromium keeps trying
# hosts this machine cannot reach.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def playwright_or_skip():
    """Call at module level: Playwright's sync API, or the whole module skipped loudly."""
    api = pytest.importorskip("playwright.sync_api", reason="SKIPPED LOUDLY: playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"SKIPPED LOUDLY: {CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)",
                    allow_module_level=True)
    return api


@contextlib.contextmanager
def chromium(api) -> Iterator:
    with api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
