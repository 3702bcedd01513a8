"""/docs and /redoc in a real headless Chromium: Swagger UI and ReDoc come from the service
itself (no CDN is reachable from here, nor needed), render the operations, and the page
loads nothing from another origin."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.service.conftest import Service

from .conftest import Browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.parametrize("service", ["embedded"], indirect=True),
]
UI_TIMEOUT_S = 30


def loaded_from(driver: WebDriver) -> list[str]:
    """Every URL the page asked for (scripts, styles, images, the schema)."""
    script = "return performance.getEntriesByType('resource').map(e => e.name)"
    return [driver.current_url, *driver.execute_script(script)]


def check_nothing_sent_elsewhere(browser: Browser, base_url: str) -> None:
    """Every URL of another origin that the page asked for was refused by the browser under
    the page's Content-Security-Policy (a console message), so no request left for it; and the
    page logged no script error. (No other host is reachable here: only the CSP refusal tells a
    blocked request from one that was sent and failed.)"""
    logs = [e["message"] for e in browser.driver.get_log("browser")]
    refused = [m for m in logs if "Content Security Policy" in m]
    elsewhere = [u for u in loaded_from(browser.driver) if not u.startswith(base_url + "/")]
    assert [u for u in elsewhere if not any(u in m for m in refused)] == [], logs
    assert [m for m in logs if "Uncaught" in m] == [], logs


def operation_shown(driver: WebDriver, method: str, path: str) -> bool:
    for summary in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary"):
        text = summary.text.split()
        if method in text and path in text:
            return True
    return False


def test_swagger_ui_renders_the_operations(browser: Browser, service: Service) -> None:
    driver = browser.driver
    with browser.screenshot_on_failure("api-docs-swagger"):
        driver.get(f"{service.base_url}/docs")
        WebDriverWait(driver, UI_TIMEOUT_S, poll_frequency=0.2).until(
            lambda d: operation_shown(d, "POST", "/v1/jobs")
        )
        assert operation_shown(driver, "DELETE", "/v1/jobs/{job_id}")
        assert "POST /v1/jobs" in " ".join(driver.find_element(By.TAG_NAME, "body").text.split())
        browser.screenshot("api-docs-swagger")
        check_nothing_sent_elsewhere(browser, service.base_url)


def test_redoc_renders_the_operations(browser: Browser, service: Service) -> None:
    driver = browser.driver
    with browser.screenshot_on_failure("api-docs-redoc"):
        driver.get(f"{service.base_url}/redoc")
        title = "Upload a dataset zip once, for any number of jobs"
        WebDriverWait(driver, UI_TIMEOUT_S, poll_frequency=0.2).until(
            lambda d: title in d.find_element(By.TAG_NAME, "body").text
        )
        browser.screenshot("api-docs-redoc")
        check_nothing_sent_elsewhere(browser, service.base_url)
