"""The dashboard's Compare: pick runs in the runs list, open #/compare, see the override that differs and
each run's duration, in a real headless Chromium against a real service process (the web tests' stand-in
trainer)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow
WAIT_S = 30


def wait(driver, condition, message: str = ""):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message)


def test_pick_two_runs_and_compare_them(service, browser):
    driver = browser
    names = []
    for epochs in (1, 2):
        run = service.http.post("/runs", json={"overrides": [f"training.max_epochs={epochs}"]}).json()
        names.append(run["name"])
    for name in names:
        service.wait_for(name)

    driver.get(service.url + "/")
    button = driver.find_element(By.ID, "compare-button")
    for i, name in enumerate(names):
        box = f'#runs-table tr[data-name="{name}"] input.pick'
        wait(driver, lambda d, box=box: d.find_elements(By.CSS_SELECTOR, box), message=f"{name} in the list")
        assert not button.is_enabled(), f"Compare enabled with {i} run(s) picked"
        driver.find_element(By.CSS_SELECTOR, box).click()
    assert button.is_enabled()
    button.click()

    wait(
        driver,
        lambda d: not d.find_element(By.ID, "view-compare").get_attribute("hidden"),
        message="the page",
    )
    fragment = urlsplit(driver.current_url).fragment
    assert fragment.startswith("/compare?")
    assert sorted(parse_qs(fragment.split("?", 1)[1])["name"]) == sorted(names)

    row = '#compare-overrides tr[data-key="training.max_epochs"]'
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), message="the differing override")
    by_run = dict(
        zip(
            [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#compare-overrides th")][1:],
            [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"{row} td")][1:],
            strict=True,
        )
    )
    assert by_run == {names[0]: "1", names[1]: "2"}
    durations = [
        td.text
        for td in driver.find_elements(By.CSS_SELECTOR, "#compare-runs tbody tr")[2].find_elements(
            By.TAG_NAME, "td"
        )
    ]
    assert durations[0] == "Duration"
    assert all(t.endswith("s") for t in durations[1:]), durations
