"""The statuses the command line waits on are the service's own (labrun/statuses.py is the one list)."""

from __future__ import annotations

from app.models import TERMINAL, RunStatus
from labrun import statuses


def test_the_client_and_the_service_read_one_list_of_statuses():
    assert tuple(RunStatus) == statuses.STATUSES
    assert TERMINAL == statuses.TERMINAL
    assert all(isinstance(s, RunStatus) for s in TERMINAL)
    assert {s for s in RunStatus if s.is_terminal()} == {"succeeded", "failed", "cancelled"}
