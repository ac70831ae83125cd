"""The dashboard's run page says what a run waits for and where it starts from (docs/run-chains.md): a
real headless Chromium against a real service process (fake trainer)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from web_helpers import LONG_S, run_for

pytestmark = pytest.mark.slow


def text(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def test_the_run_page_shows_dependencies_and_the_run_it_starts_from(service, browser, tmp_path):
    first = service.http.post("/runs", json={"overrides": run_for(LONG_S)}).json()["name"]
    body = {"overrides": [*run_for(1.0), f"init_from='{first}'"], "after": [{"run": first}]}
    waiting = service.http.post("/runs", json=body)
    assert waiting.status_code == 201, waiting.text
    name = waiting.json()["name"]
    browser.get(f"{service.url}/runs/{name}/view")
    WebDriverWait(browser, 30, poll_frequency=0.1).until(
        lambda d: "Waits for" in text(d, "#run-details"), "the run's dependencies"
    )
    details = text(browser, "#run-details")
    assert f"run {first} succeeded (" in details
    assert f"waiting for run {first} to succeed" in details
    assert f"{first}'s last checkpoint (init_from)" in details
    link = browser.find_element(By.CSS_SELECTOR, '#run-details dd[data-field="Starts from"] a')
    assert link.get_attribute("href").endswith("#/runs/" + quote(first, safe=""))
    browser.save_screenshot(str(tmp_path / "run-chain.png"))
