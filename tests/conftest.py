"""Fixtures every test folder shares. Each folder's own conftest.py adds what only its tests need (an
in-process app, a CLI service, a Docker Engine, a Slurm cluster, a browser); helpers that are imported by
name live in tests/helpers (on sys.path through pyproject.toml's pytest ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """An empty output directory; a service's logs (``service-<port>.log``) go next to it."""
    path = tmp_path / "outputs"
    path.mkdir()
    return path
