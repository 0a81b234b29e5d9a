"""Headless Chromium for the console's browser tests: Debian's package, driven by Playwright.

Playwright never downloads a browser here: it launches `/usr/bin/chromium` (or
$CHROMIUM) with a fresh profile per test. Without that binary the tests skip locally
and fail in CI (CI set), where .ci/run installs it from Debian's packages.

Every request the page makes is recorded, so a test can check that nothing came from
anywhere but the server (no CDN: the console works offline). A JavaScript error, or a
script, stylesheet or API call answered with an error, fails the test that caused it;
a page answered 403 or 404 is for the test to check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    expect,
    sync_playwright,
)

__all__ = ["CHROMIUM", "Chromium", "chromium_or_skip", "open_chromium"]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 820}
# A bound, not a speed target: room for a loaded CI machine parsing Mermaid's 3.5 MB.
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


def chromium_or_skip() -> None:
    """Skip (locally) or fail (in CI) when Debian's Chromium is not installed."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = (f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; "
              ".ci/run does) or point CHROMIUM at a Chromium binary")
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Chromium:
    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign_requests(self, *origins: str) -> list[str]:
        """Requests to anything but `origins` (data: and about: URLs are local)."""
        return [url for url in self.requests
                if not url.startswith((*origins, "data:", "about:", "blob:"))]


@contextmanager
def open_chromium(profile: Path) -> Iterator[Chromium]:
    """Chromium with a fresh profile in `profile`; JavaScript errors are collected."""
    chromium_or_skip()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport=VIEWPORT, locale="es-AR", timezone_id="America/Argentina/Buenos_Aires",
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        browser = Chromium(context, page)
        context.on("request", lambda request: browser.requests.append(request.url))
        page.on("pageerror", lambda error: browser.errors.append(str(error)))
        page.on("console", lambda message: _console_error(browser, message))
        page.on("response", lambda response: _failed_asset(browser, response))
        try:
            yield browser
        finally:
            context.close()


def _console_error(browser: Chromium, message: ConsoleMessage) -> None:
    # A page answered 403 or 404 is something a test checks, not a script's error; a
    # script or stylesheet that failed to load is caught by _failed_asset instead.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        browser.errors.append(message.text)


def _failed_asset(browser: Chromium, response: Response) -> None:
    if response.status >= 400 and response.request.resource_type != "document":
        browser.errors.append(f"{response.status} for {response.request.resource_type} "
                              f"{response.url}")
