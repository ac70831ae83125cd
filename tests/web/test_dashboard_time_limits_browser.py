"""Time limits on the dashboard, in a real headless Chromium against a real service process: a run submitted
through the form with a time limit shows it and what is left, gets one more hour from its page, and, once
stopped at its limit (with a checkpoint), is resumed from its page as its next attempt."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from test_dashboard_browser import wait
from web_helpers import LONG_S, run_for

pytestmark = pytest.mark.slow


def text(driver, css: str) -> str:
    """The element's text; "" while the page replaces it (the run's details are redrawn as the time left
    changes, so an element found may be gone by the time its text is read)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def test_a_time_limit_from_the_form_extended_then_reached_then_resumed(service, browser):
    driver = browser
    driver.get(service.url + "/")
    driver.find_element(By.CSS_SELECTOR, "#submit-panel summary").click()
    driver.find_element(By.ID, "overrides").send_keys("\n".join(run_for(LONG_S)) + "\n")
    driver.find_element(By.ID, "time-limit").send_keys("2h")
    driver.find_element(By.ID, "submit-button").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#submit-result a"), message="the queued run")
    name = driver.find_element(By.CSS_SELECTOR, "#submit-result a").text
    assert service.http.get(f"/runs/{name}").json()["time_limit_s"] == 7200

    driver.find_element(By.CSS_SELECTOR, "#submit-result a").click()
    wait(driver, lambda d: text(d, "#run-status") == "running", message="the run's page, running")
    wait(driver, lambda d: "left, at" in text(d, '[data-field="Time limit"]'), message="the time left")
    wait(
        driver,
        lambda d: text(d, '[data-field="Time limit"]').startswith(
            ("2h 0m (2h 0m left", "2h 0m (1h 59m left")
        ),
        message="the limit and the time left",
    )
    more = driver.find_element(By.ID, "run-more-time")
    assert more.is_displayed()
    more.click()
    wait(driver, lambda d: text(d, '[data-field="Time limit"]').startswith("3h 0m"), message="one more hour")
    assert service.http.get(f"/runs/{name}").json()["time_limit_s"] == 3 * 3600

    # Its limit brought to within the checkpoint's minute (LABRUN_TIME_LIMIT_SAVE_S): it stops, resumable.
    time.sleep(1)  # its stand-in is past its start-up
    run = service.http.get(f"/runs/{name}").json()
    ran = time.time() - dt.datetime.fromisoformat(run["started_at"]).timestamp()
    assert service.http.post(f"/runs/{name}/time-limit", json={"time_limit": ran + 5}).status_code == 200
    wait(driver, lambda d: text(d, "#run-status") == "cancelled", message="stopped at its limit")
    wait(
        driver,
        lambda d: "reached; resumable from its checkpoint" in text(d, '[data-field="Reason"]'),
        message="the reason",
    )
    resume = driver.find_element(By.ID, "run-resume")
    assert resume.is_displayed()
    assert not driver.find_element(By.ID, "run-more-time").is_displayed()
    resume.click()
    wait(driver, lambda d: text(d, "#run-status") in ("queued", "running"), message="resumed")
    assert service.http.get(f"/runs/{name}").json()["attempts"] == 2
    wait(driver, lambda d: text(d, '[data-field="Attempt"]') == "2", message="its attempt shown")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert errors == [], errors
