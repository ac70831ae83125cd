"""The dashboard's Sweeps entry and list, and the loss chart's step axis, in a real headless Chromium against
a real service process (the web tests' stand-in trainer)."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow
WAIT_S = 30


def wait(driver, condition, message: str = ""):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message)


def test_sweeps_list_reaches_a_sweep_and_step_ticks_are_whole(service, browser):
    driver = browser
    sweep = service.http.post("/sweeps", json={"overrides": ["training.max_epochs=1,2"]}).json()
    for run in sweep["runs"]:
        service.wait_for(run["name"])

    driver.get(service.url + "/")
    driver.find_element(By.CSS_SELECTOR, '[data-nav="sweeps"]').click()
    row = f'#sweeps-table tr[data-name="{sweep["name"]}"]'
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), message="the sweep in the list")
    cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"{row} td")]
    assert cells[2] == "2"
    assert "2 succeeded" in cells[3]
    assert cells[4] == "finished"
    assert "active" in driver.find_element(By.CSS_SELECTOR, '[data-nav="sweeps"]').get_attribute("class")

    driver.find_element(By.CSS_SELECTOR, f"{row} .name a").click()
    wait(driver, lambda d: d.find_element(By.ID, "sweep-name").text == sweep["name"], message="its page")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sweep-rows tr")) == 2, message="its runs")

    # A short run's step axis: whole steps only (it used to read 0, 0.5, 1, ...).
    driver.get(f"{service.url}/#/runs/{sweep['runs'][0]['name']}")
    ticks = wait(
        driver,
        lambda d: json.loads(d.find_element(By.ID, "chart").get_attribute("data-xticks") or "null"),
        message="the chart's step ticks",
    )
    assert len(ticks) >= 2
    assert all(float(t).is_integer() for t in ticks), ticks
