"""The dashboard's queue page shows each reservation not over as a row (its GPUs, window, users and the runs
on its GPUs), in a real headless Chromium against a real service process with two GPUs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from test_dashboard_browser import screenshot, text, wait

pytestmark = pytest.mark.slow


def test_the_queue_page_has_a_row_per_reservation(service, browser, tmp_path: Path):
    def at(hours: float) -> str:
        return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()

    booked = service.http.post(
        "/reservations", json={"gpus": [1], "start": at(1), "end": at(3), "note": "paper deadline"}
    )
    assert booked.status_code == 201, booked.text
    driver = browser
    driver.get(f"{service.url}/#/queue")
    row = f'#reservations-table tr[data-id="{booked.json()["id"]}"]'
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), message="the reservation's row")
    cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"{row} td")]
    assert cells[:3] == ["1", "upcoming", "1"]
    assert cells[3] == booked.json()["start"]
    assert (cells[5], cells[6], cells[8]) == ("local", "local", "paper deadline")
    screenshot(driver, tmp_path / "queue-reservations.png")
    service.http.post(f"/reservations/{booked.json()['id']}/end")
    wait(driver, lambda d: not d.find_element(By.ID, "reservations").is_displayed(), message="its end")
    assert text(driver, row) == ""
