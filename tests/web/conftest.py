"""Fixtures for the dashboard, curves and metrics tests: an in-process service (``client``), the service as
a process (``service``), and a headless Chromium driven by Selenium (``browser``).

Runs use the fake trainer through ``web_trainer.py``: a run lasts ``training.max_epochs * EPOCH_S``
seconds, so every override these tests submit is an ordinary one (``run_for`` builds them, in one place).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))  # service_helpers, fake_trainer

from service_helpers import ServiceProcess, cancel_all, clients
from web_helpers import WEB_TRAINER


@pytest.fixture
def make_client(output_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: an in-process service running the web tests' stand-in trainer."""
    yield from clients(output_dir, trainer_command=WEB_TRAINER)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture
def service(output_dir: Path) -> Iterator[ServiceProcess]:
    """``python -m app`` with two GPUs to hand out (the fake trainer ignores them) and two CPU slots."""
    svc = ServiceProcess(output_dir, WEB_TRAINER, LABRUN_GPUS="0,1", LABRUN_MAX_CPU_RUNS="2").start()
    try:
        yield svc
    finally:
        cancel_all(svc.http)
        svc.stop()


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    missing = [p for p in (chromium, driver) if not os.path.exists(p)]
    if missing:
        reason = f"{' and '.join(missing)} not installed (bash .ci/engines/chromium.sh installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture
def browser() -> Iterator:
    """Debian's Chromium, headless, through its own chromedriver: Selenium Manager never downloads one."""
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="labrun-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
