"""A headless Debian Chromium driven by Debian's chromedriver (never a downloaded browser), and
the service tests' real API + Celery worker (the `service` fixture, imported, not copied).

A missing chromium or chromedriver fails the browser tests; it never skips them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.remote.webdriver import WebDriver

from tests.service.conftest import ROOT
from tests.service.conftest import service as service  # noqa: F401 (the fixture, re-exported)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
]


@dataclass
class Browser:
    driver: WebDriver
    downloads: Path

    def screenshot(self, name: str) -> Path:
        """Save the window as tests/artifacts/<name>.png (kept after the run)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console_errors(self) -> list[str]:
        """Uncaught script errors the page logged."""
        return [e["message"] for e in self.driver.get_log("browser") if "Uncaught" in e["message"]]

    @contextlib.contextmanager
    def screenshot_on_failure(self, name: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.screenshot(f"{name}-failure")
            raise


def _require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: install Debian's chromium and chromium-driver "
            "(`apt-get install -y chromium chromium-driver`; scripts/services.sh does it)",
            pytrace=False,
        )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    _require_chromium()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in [*CHROME_ARGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(arg)
    prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    options.add_experimental_option("prefs", prefs)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is never asked to find or download anything.
    chromedriver = ChromeService(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=chromedriver, options=options)
    try:
        yield Browser(driver, downloads)
    finally:
        driver.quit()
