"""A run's statuses as the HTTP API writes them: the one list that the service (``RunStatus`` and its
``TERMINAL`` in ``app/models.py``) and the command line both read.

It lives with the client because the client must stay light: ``labrun`` imports neither the service nor
the trainer (they pull in pydantic, FastAPI, Hydra), and this module imports nothing, so the service can
read it for free. Asking the service for the list instead would cost the client a request before it could
wait for a run.
"""

from __future__ import annotations

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})  # a run in one of these never changes status again
