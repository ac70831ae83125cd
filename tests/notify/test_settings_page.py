"""The dashboard's settings page (#/settings, app/web/settings.js) in a real headless Chromium against a real
service process: add a signed webhook (its secret shown once), a refused URL with its reason, a test message
that reaches a real receiver with a valid signature, the default events saved, the destination removed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from notify_helpers import notify_env
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from service_helpers import ServiceProcess, cancel_all

WEB = Path(__file__).resolve().parents[1] / "web"
sys.path.insert(0, str(WEB))
_spec = importlib.util.spec_from_file_location("web_conftest", WEB / "conftest.py")
assert _spec is not None
assert _spec.loader is not None
_web = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_web)
browser = _web.browser  # the web tests' headless Chromium (Debian's, through its own chromedriver)

pytestmark = pytest.mark.slow


def wait(driver, condition, message: str = ""):
    return WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: condition(d), message)


def text(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def test_the_settings_page_adds_tests_and_removes_a_destination_and_saves_events(
    output_dir, tmp_path, receiver, browser
):
    svc = ServiceProcess(output_dir, **notify_env(tmp_path)).start()
    driver = browser
    try:
        driver.get(svc.url + "/#/settings")
        wait(driver, lambda d: d.find_element(By.ID, "dest-empty").is_displayed(), "the empty list")
        assert driver.find_element(
            By.ID, "event-failed"
        ).is_selected()  # the defaults: failed, sweep_finished
        assert not driver.find_element(By.ID, "event-succeeded").is_selected()

        url = driver.find_element(By.ID, "dest-url")
        url.send_keys("gopher://x")
        driver.find_element(By.ID, "dest-add").click()
        wait(driver, lambda d: "gopher" in text(d, "#dest-error"), "the 422 with its reason")

        url.clear()
        url.send_keys(receiver.url)
        driver.find_element(By.ID, "dest-add").click()
        wait(driver, lambda d: d.find_element(By.ID, "dest-secret").is_displayed(), "the secret, once")
        receiver.secret = text(driver, "#dest-secret-value")
        assert receiver.secret.startswith("whsec_")
        assert url.get_attribute("value") == ""  # the URL is not left on the page
        wait(driver, lambda d: text(d, "#dest-rows tr td:nth-child(2)") == "webhook", "the new row")
        assert receiver.secret not in text(driver, "#dest-rows")
        assert text(driver, "#dest-rows tr td:nth-child(4)") == "active"

        driver.find_element(By.XPATH, "//tbody[@id='dest-rows']//button[text()='Test']").click()
        [probe] = receiver.wait(1, "test")
        assert receiver.bad_signatures == 0
        assert probe["version"] == 1
        wait(driver, lambda d: "got the test message" in text(d, "#notify-result"), "the test's result")

        driver.find_element(By.ID, "event-succeeded").click()
        driver.find_element(By.ID, "event-failed").click()
        driver.find_element(By.ID, "events-save").click()
        wait(driver, lambda d: "now send" in text(d, "#notify-result"), "the events saved")
        assert svc.http.get("/me/notify/events").json()["events"] == ["succeeded", "sweep_finished"]

        remove = driver.find_element(By.XPATH, "//tbody[@id='dest-rows']//button[text()='Remove']")
        remove.click()
        assert remove.text == "Really remove?"
        assert svc.http.get("/me/notify/destinations").json()["count"] == 1  # one click removes nothing
        remove.click()
        wait(driver, lambda d: d.find_element(By.ID, "dest-empty").is_displayed(), "the row removed")
        assert svc.http.get("/me/notify/destinations").json()["count"] == 0
        driver.save_screenshot(str(tmp_path / "settings.png"))
        logged = driver.get_log("browser")  # the 422 above is logged as a network error: no script error
        assert not [e for e in logged if e["level"] == "SEVERE" and e["source"] != "network"], logged
    finally:
        cancel_all(svc.http)
        svc.stop()
