"""The dashboard in a real headless Chromium against a real service process (fake trainer): load /, submit a
run through the form (a 422 first, shown next to the field), see it appear and finish, open its page and
see the loss curve drawn with the points of its metrics.csv and its log, cancel a long run from its page,
look at the GPU map; and, with auth on, the token asked for once and never put in a URL. Screenshots go
under the test's tmp directory (their paths are printed)."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from service_helpers import make_settings
from service_process import free_port
from web_helpers import LONG_S, WEB_TRAINER, run_for

from app.main import create_app

pytestmark = pytest.mark.slow
WAIT_S = 30


def wait(driver, condition, timeout: float = WAIT_S, message: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message)


def text(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def row_status(driver, name: str) -> str:
    return text(driver, f'#runs-table tr[data-name="{name}"] .status')


def screenshot(driver, path: Path) -> Path:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def painted_pixels(driver, rgb: tuple[int, int, int]) -> int:
    """Pixels of the chart canvas within a small distance of ``rgb``: a curve was drawn in that color."""
    return driver.execute_script(
        """
        const [r, g, b] = arguments[0];
        const c = document.getElementById("chart");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] > 200 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60) n++;
        }
        return n;
        """,
        list(rgb),
    )


def test_dashboard(service, browser, tmp_path):  # noqa: PLR0915 - one walk through the pages, step by step
    driver = browser
    long_gpu = service.submit(run_for(LONG_S, "accelerator=gpu", "devices=1"))["name"]

    driver.get(service.url + "/")
    wait(driver, lambda d: row_status(d, long_gpu) in ("queued", "running"), message="the runs table")

    # Submit through the form: a refused override first, its message next to the field.
    driver.find_element(By.CSS_SELECTOR, "#submit-panel summary").click()
    area = driver.find_element(By.ID, "overrides")
    area.send_keys("model=no-such-model")
    driver.find_element(By.ID, "submit-button").click()
    wait(driver, lambda d: "no-such-model" in text(d, "#submit-error"), message="the 422 next to the field")
    assert area.get_attribute("aria-invalid") == "true"
    area.clear()
    area.send_keys("\n".join(run_for(2.0)) + "\n")
    driver.find_element(By.ID, "submit-button").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#submit-result a"), message="the queued run")
    name = driver.find_element(By.CSS_SELECTOR, "#submit-result a").text
    assert text(driver, "#submit-error") == ""
    assert service.http.get(f"/runs/{name}").json()["overrides"] == run_for(2.0)
    wait(driver, lambda d: row_status(d, name) == "succeeded", message=f"{name} succeeded in the table")
    assert row_status(driver, long_gpu) == "running"
    assert text(driver, f'#runs-table tr[data-name="{long_gpu}"] .gpus') == "0"
    runs_png = screenshot(driver, tmp_path / "runs-page.png")

    # The run's page: details, the loss curve from metrics.csv, the log.
    driver.find_element(By.CSS_SELECTOR, f'#runs-table tr[data-name="{name}"] .name a').click()
    wait(driver, lambda d: text(d, "#run-name") == name and text(d, "#run-status") == "succeeded")
    run = service.http.get(f"/runs/{name}").json()
    with (service.output_dir / run["run_dir"] / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    expected = {
        key: sum(1 for row in rows if row[key]) for key in ("train_loss", "val_loss", "train_loss_epoch")
    }
    assert expected["train_loss"] == 4
    drawn = wait(
        driver,
        lambda d: json.loads(d.find_element(By.ID, "chart").get_attribute("data-points") or "{}"),
        message="the loss curve",
    )
    assert drawn == expected
    assert painted_pixels(driver, (0x25, 0x63, 0xEB)) > 100  # train_loss's line and dots
    assert painted_pixels(driver, (0xDC, 0x26, 0x26)) > 10  # the val_loss dot
    assert "5 rows of metrics.csv" in text(driver, "#chart-note")
    wait(driver, lambda d: "line 1" in text(d, "#log"), message="the log")
    details = text(driver, "#run-details")
    assert run["run_dir"] in details
    assert "Exit code" in details
    assert text(driver, "#run-overrides") == "\n".join(run_for(2.0))
    run_png = screenshot(driver, tmp_path / "run-page.png")

    # The GPU map: GPU 0 runs the long run, GPU 1 is free; a low 2-GPU run waits, its class shown.
    body = {"overrides": run_for(LONG_S, "accelerator=gpu", "devices=2"), "priority": "low"}
    waiting = service.http.post("/runs", json=body).json()["name"]
    driver.find_element(By.CSS_SELECTOR, '[data-nav="queue"]').click()
    wait(driver, lambda d: long_gpu in text(d, '.gpu-tile[data-gpu="0"]'), message="the GPU map")
    assert "local · normal · " in text(driver, '.gpu-tile[data-gpu="0"]')
    assert "free" in text(driver, '.gpu-tile[data-gpu="1"]')
    queued = f'#queue-table tr[data-name="{waiting}"] .priority'
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, queued), message="the queued low run")
    assert text(driver, queued) == "low"
    screenshot(driver, tmp_path / "queue-page.png")
    assert service.http.post(f"/runs/{waiting}/cancel").status_code == 200

    # Cancel the long run from its page (two clicks: the button asks first), live log and status.
    driver.get(f"{service.url}/runs/{long_gpu}/view")  # the server's link to a run page
    wait(driver, lambda d: text(d, "#run-status") == "running", message="the long run's page")
    cancel = driver.find_element(By.ID, "run-cancel")
    cancel.click()
    assert cancel.text == "Really cancel?"
    cancel.click()
    wait(driver, lambda d: text(d, "#run-status") == "cancelled", message="the run cancelled")
    assert text(driver, "#run-error") == ""
    assert service.http.get(f"/runs/{long_gpu}").json()["status"] == "cancelled"
    assert not driver.find_element(By.ID, "run-cancel").is_enabled()

    # A refused action shows the server's words: cancelling it again is a 409.
    driver.execute_script("document.getElementById('run-cancel').disabled = false")
    cancel.click()
    cancel.click()
    wait(driver, lambda d: text(d, "#run-error"), message="the server's refusal")
    screenshot(driver, tmp_path / "cancelled-run-page.png")

    # No script error; the network errors logged are the 422 and the 409 asked for above.
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert errors == [], errors
    assert runs_png.stat().st_size > 10_000
    assert run_png.stat().st_size > 10_000


class BearerOnly:
    """Stands in for the service's auth (401 with ``WWW-Authenticate: Bearer`` without the right token) in
    front of the real app; the page and its files stay open, as the page must load to ask."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token, self.seen = app, token, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/" and not scope["path"].startswith("/web/"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            self.seen.append((scope["path"], scope["query_string"].decode(), auth))
            if auth != f"Bearer {self.token}":
                body = b'{"detail": "a valid token is needed"}'
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def test_token_asked_once_and_kept_out_of_urls(browser, output_dir):
    token = "s3cret-token"
    app = BearerOnly(create_app(make_settings(output_dir, trainer_command=WEB_TRAINER)), token)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        driver = browser
        wait(driver, lambda _d: server.started, message="the server")
        driver.get(f"http://127.0.0.1:{port}/")
        wait(driver, lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open") is not None)
        driver.find_element(By.ID, "token-input").send_keys("wrong\n")
        wait(driver, lambda d: "refused" in text(d, "#token-reason"), message="the wrong token refused")
        driver.find_element(By.ID, "token-input").send_keys(token + "\n")
        wait(driver, lambda d: text(d, "#runs-count") == "0 runs", message="the runs table with the token")
        assert driver.execute_script("return sessionStorage.getItem('labrun.token')") == token
        driver.refresh()  # the same tab: no second prompt
        wait(driver, lambda d: text(d, "#runs-count") == "0 runs")
        assert driver.find_element(By.ID, "token-dialog").get_attribute("open") is None
        assert all(token not in query for _, query, _ in app.seen)
        assert all(token not in e["name"] for e in driver.execute_script("return performance.getEntries()"))
        authorized = [path for path, _, auth in app.seen if auth == f"Bearer {token}"]
        assert "/runs" in authorized
    finally:
        server.should_exit = True
        thread.join(timeout=30)
