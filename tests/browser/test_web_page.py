"""The web page at `/` in a real headless Chromium, against a real API and Celery worker: upload
a small dataset, follow the job live, open the HTML report, download the balanced dataset, see
refusals and failed jobs. Screenshots go to tests/artifacts/web-page-*.png."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.service.conftest import Service
from tests.service.datasets import CLASS_SIZES, make_corrupt_image_zip, make_zip

from .conftest import Browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    # The service tests' fixture, on the embedded backend only (SQLite + embedded broker).
    pytest.mark.parametrize("service", ["embedded"], indirect=True),
]

# Tiny iteration counts: the job takes seconds, not the minutes of a real preset.
OPTIONS = {
    "opt-preset": "quick",
    "opt-gan_iterations": "10",
    "opt-epochs": "1",
    "opt-seeds": "1",
    "opt-classifier_augment": "none",
}
FINISHED = {"succeeded", "failed", "canceled"}
JOB_TIMEOUT_S = 240
UI_TIMEOUT_S = 30


def wait(driver: WebDriver, timeout: float = UI_TIMEOUT_S) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.2)


def text_of(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def open_page(driver: WebDriver, service: Service) -> None:
    driver.get(f"{service.base_url}/")
    assert driver.title == "GAN class balancer"
    # Public page, no key yet: it loads and asks for the key instead of failing.
    wait(driver).until(lambda d: "Enter your API key" in text_of(d, "jobs-message"))


def enter_key(driver: WebDriver, key: str) -> None:
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "refresh-jobs").click()  # also takes the focus: `change` fires


def submit(driver: WebDriver, dataset: Path, options: dict[str, str]) -> None:
    driver.find_element(By.ID, "dataset").send_keys(str(dataset))
    for element_id, value in options.items():
        element = driver.find_element(By.ID, element_id)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    driver.find_element(By.ID, "submit-job").click()


def shown_status(driver: WebDriver, among: set[str]) -> str | bool:
    status = text_of(driver, "job-status")
    return status if status in among else False


def under_way(driver: WebDriver) -> bool:
    return text_of(driver, "job-progress-text") != "0 %" or bool(shown_status(driver, FINISHED))


def wait_until_finished(browser: Browser, service: Service) -> str:
    """Follow the page until the job ends; screenshot it once while it runs."""
    driver = browser.driver
    try:
        wait(driver, JOB_TIMEOUT_S).until(under_way)
        if shown_status(driver, {"running"}):
            browser.screenshot("web-page-2-running")
        return wait(driver, JOB_TIMEOUT_S).until(lambda d: shown_status(d, FINISHED))
    except TimeoutException:
        pytest.fail(f"the page never showed the job's end\n{service.log_tail()}")


def check_report_frame(driver: WebDriver) -> None:
    """The report shown in the page: its per-class table and its charts, drawn."""
    frame = driver.find_element(By.ID, "report-frame")
    wait(driver).until(lambda d: (frame.get_attribute("src") or "").startswith("blob:"))
    driver.switch_to.frame(frame)
    try:
        check_report(driver)
    finally:
        driver.switch_to.default_content()


def check_report(driver: WebDriver) -> None:
    table = wait(driver).until(EC.presence_of_element_located((By.ID, "per-class-table")))
    body_text = table.text
    assert all(name in body_text for name in CLASS_SIZES), body_text
    # The page's augmentation choice reached the job.
    assert "trained without augmentation" in driver.find_element(By.ID, "augmentation").text
    widths = wait(driver).until(
        lambda d: (
            (
                w := d.execute_script(
                    "const imgs = [...document.querySelectorAll('img.chart')];"
                    "return imgs.every(i => i.complete) ? imgs.map(i => i.naturalWidth) : null;"
                )
            )
            and w
        )
    )
    assert widths and all(w > 0 for w in widths), widths


def check_download(browser: Browser, job_id: str) -> None:
    link = browser.driver.find_element(By.ID, "download-link")
    assert link.is_displayed() and "balanced dataset" in link.text
    link.click()
    target = browser.downloads / f"balanced-{job_id}.zip"
    deadline = time.monotonic() + UI_TIMEOUT_S
    while not target.is_file() or any(browser.downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, list(browser.downloads.iterdir())
        time.sleep(0.2)
    with zipfile.ZipFile(target) as zf:
        folders = {name.split("/")[-2] for name in zf.namelist() if "/" in name}
    assert set(CLASS_SIZES) <= folders, folders


def check_report_tab(browser: Browser) -> None:
    driver = browser.driver
    page = driver.current_window_handle
    driver.find_element(By.ID, "report-link").click()
    wait(driver).until(lambda d: len(d.window_handles) == 2)
    driver.switch_to.window(next(h for h in driver.window_handles if h != page))
    try:
        check_report(driver)
        browser.screenshot("web-page-4-report")
    finally:
        driver.close()
        driver.switch_to.window(page)


def job_row_status(driver: WebDriver, job_id: str) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, f'#jobs-body tr[data-job-id="{job_id}"]')
    return rows[0].find_elements(By.TAG_NAME, "td")[2].text if rows else ""


def test_upload_follow_and_open_the_report(
    service: Service, browser: Browser, tmp_path: Path
) -> None:
    key = service.create_key("browser test", owner="browser-test")
    dataset = make_zip(tmp_path / "shapes.zip")
    driver = browser.driver
    with browser.screenshot_on_failure("web-page"):
        open_page(driver, service)
        browser.screenshot("web-page-1-start")
        enter_key(driver, key)
        wait(driver).until(lambda d: "No jobs yet." in text_of(d, "jobs-message"))
        submit(driver, dataset, OPTIONS)

        wait(driver).until(lambda d: text_of(d, "job-id"))
        job_id = text_of(driver, "job-id")
        assert wait_until_finished(browser, service) == "succeeded", text_of(driver, "job-error")
        assert text_of(driver, "job-progress-text") == "100 %"
        assert not driver.find_element(By.ID, "job-error").is_displayed()
        check_report_frame(driver)
        browser.screenshot("web-page-3-succeeded")
        check_download(browser, job_id)
        check_report_tab(browser)
        wait(driver).until(lambda d: job_row_status(d, job_id) == "succeeded")

        # The key stays in this browser, and the page comes back to the job it showed.
        driver.refresh()
        assert driver.find_element(By.ID, "api-key").get_attribute("value") == key
        wait(driver).until(lambda d: text_of(d, "job-status") == "succeeded")
        assert browser.console_errors() == []


def test_refusals_and_failed_jobs_are_explained(
    service: Service, browser: Browser, tmp_path: Path
) -> None:
    key = service.create_key("browser test errors", owner="browser-test-errors")
    not_a_zip = tmp_path / "holiday.zip"
    not_a_zip.write_bytes(b"these are not the images you are looking for")
    driver = browser.driver
    with browser.screenshot_on_failure("web-page-errors"):
        open_page(driver, service)
        enter_key(driver, "gb_not-a-real-key")
        wait(driver).until(lambda d: "check the API key" in text_of(d, "jobs-message"))
        assert "not valid" in text_of(driver, "jobs-message")

        enter_key(driver, key)
        submit(driver, not_a_zip, {})
        error = wait(driver).until(EC.visibility_of_element_located((By.ID, "form-error")))
        assert error.text.startswith("Upload refused. The dataset is not usable: "), error.text
        browser.screenshot("web-page-5-refused")

        submit(driver, make_corrupt_image_zip(tmp_path / "corrupt.zip"), OPTIONS)
        wait(driver).until(lambda d: not d.find_element(By.ID, "form-error").is_displayed())
        assert wait_until_finished(browser, service) == "failed"
        job_error = text_of(driver, "job-error")
        assert job_error.startswith("The job failed: ") and "broken.png" in job_error, job_error
        assert not driver.find_element(By.ID, "job-results").is_displayed()
        browser.screenshot("web-page-6-failed")
        assert browser.console_errors() == []


def dataset_row(driver: WebDriver, dataset_id: str) -> list:
    rows = driver.find_elements(
        By.CSS_SELECTOR, f'#datasets-body tr[data-dataset-id="{dataset_id}"]'
    )
    return rows[0].find_elements(By.TAG_NAME, "td") if rows else []


@pytest.mark.slow
def test_datasets_are_listed_and_a_job_starts_on_one(
    service: Service, browser: Browser, tmp_path: Path
) -> None:
    """A dataset uploaded once (through the API) is listed next to the built-in one; "New job"
    on it starts a job with the options of the form, with no file chosen."""
    key = service.create_key("browser datasets", owner="browser-datasets")
    with service.client_for(key) as client:
        data = make_zip(tmp_path / "shapes.zip").read_bytes()
        files = {"dataset": ("shapes.zip", data, "application/zip")}
        dataset = client.post("/v1/datasets", files=files).json()
    driver = browser.driver
    with browser.screenshot_on_failure("web-page-datasets"):
        open_page(driver, service)
        enter_key(driver, key)
        wait(driver).until(lambda d: dataset_row(d, dataset["id"]))
        cells = dataset_row(driver, dataset["id"])
        assert cells[0].text == "shapes.zip" and "circle:" in cells[1].text
        assert dataset_row(driver, "demo-mnist-1-2-3")[3].text.endswith("built-in")
        cells[4].find_element(By.TAG_NAME, "button").click()  # "New job"
        assert (
            Select(
                driver.find_element(By.ID, "dataset-choice")
            ).first_selected_option.get_attribute("value")
            == dataset["id"]
        )
        assert not driver.find_element(By.ID, "dataset").is_displayed()
        for element_id, value in OPTIONS.items():
            element = driver.find_element(By.ID, element_id)
            if element.tag_name == "select":
                Select(element).select_by_value(value)
            else:
                element.clear()
                element.send_keys(value)
        driver.find_element(By.ID, "submit-job").click()
        wait(driver).until(lambda d: text_of(d, "job-id"))
        job_id = text_of(driver, "job-id")
        assert wait_until_finished(browser, service) == "succeeded", text_of(driver, "job-error")
        browser.screenshot("web-page-7-dataset-job")
        with service.client_for(key) as client:
            job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["dataset_id"] == dataset["id"] and job["config"]["gan_iterations"] == 10
        assert browser.console_errors() == []
