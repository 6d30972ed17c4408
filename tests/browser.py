"""Headless Chromium for UI tests: the system browser (Debian `chromium`) driven by Playwright, no download."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]


def chromium_path() -> str:
    path = os.environ.get("GENAIOPS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("no Chromium on PATH: `make test` installs Debian's `chromium` (apt-get install chromium); "
                           "or set GENAIOPS_CHROMIUM to a Chromium binary")
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless browser; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
