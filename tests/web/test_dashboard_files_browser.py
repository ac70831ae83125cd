"""The run page's Files panel: opened, it lists the run's regular files with download links (never a link
the run planted), in a real headless Chromium against a real service process."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from web_helpers import run_for

pytestmark = pytest.mark.slow


def test_the_files_panel_lists_the_runs_files_with_links(service, browser):
    run = service.http.post("/runs", json={"overrides": run_for(0.2)}).json()
    run = service.wait_for(run["name"])
    run_dir = service.output_dir / run["run_dir"]
    (run_dir / "sub").mkdir()
    (run_dir / "sub" / "a b.txt").write_text("hello")
    os.symlink("/proc/self/environ", run_dir / "environ")
    listed = [f["path"] for f in service.http.get(f"/runs/{run['name']}/files").json()["files"]]
    assert "sub/a b.txt" in listed

    browser.get(f"{service.url}/#/runs/{run['name']}")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "run-name").text == run["name"])
    browser.find_element(By.CSS_SELECTOR, "#run-files-panel summary").click()
    items = "#run-files li"
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, items)) == len(listed))
    shown = [li.get_attribute("data-path") for li in browser.find_elements(By.CSS_SELECTOR, items)]
    assert shown == listed
    assert "environ" not in shown
    link = browser.find_element(By.CSS_SELECTOR, '#run-files li[data-path="sub/a b.txt"] a')
    assert unquote(urlsplit(link.get_attribute("href")).path) == f"/runs/{run['name']}/files/sub/a b.txt"
    assert "1 entries that are not regular files" in browser.find_element(By.ID, "run-files-note").text
