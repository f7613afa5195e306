"""The /docs page works in a real browser with no internet access: the routes are listed and
a "Try it out" request succeeds. A screenshot is kept in artifacts/ for CI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.live import REPO_ROOT, live_server, needs_commands

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO_ROOT / "artifacts"

pytestmark = [pytest.mark.e2e, needs_commands("chromium", "chromedriver")]


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER or "")
    return webdriver.Chrome(options=options, service=service)


@pytest.mark.sqlite_only
def test_docs_page_lists_routes_and_try_it_works(database_url: str, tmp_path: Path) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        browser = _browser()
        try:
            browser.get(f"{server.url}/docs")
            wait = WebDriverWait(browser, 30)
            wait.until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock"))
            )
            paths = {
                e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
            }
            assert {"/records", "/records/{record_id}", "/countries", "/stats"} <= paths

            health = browser.find_element(
                By.XPATH, "//div[contains(@class, 'opblock ')][.//*[@data-path='/health']]"
            )
            health.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
            wait.until(lambda _: health.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
            health.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
            health.find_element(By.CSS_SELECTOR, ".execute").click()
            status = wait.until(
                lambda _: health.find_element(
                    By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
                )
            )
            assert status.text.strip().startswith("200")
            assert (
                '"status": "ok"'
                in health.find_element(By.CSS_SELECTOR, ".live-responses-table").text
            )
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "docs.png"))
            browser.quit()
