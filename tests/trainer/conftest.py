"""Fixtures of the trainer tests; helpers live in trainer_helpers.py."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")
