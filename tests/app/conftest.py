"""Fixtures for the service tests: an in-process app on a temporary output dir (helpers: service_helpers.py).

Runs use ``fake_trainer.py`` (a fast stand-in that behaves like the trainer where the service can see it)
unless a test asks for the real trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import clients


@pytest.fixture
def make_client(output_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: an in-process service (lifespan run) on ``output_dir``."""
    yield from clients(output_dir)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()
