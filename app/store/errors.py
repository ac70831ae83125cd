"""What the store refuses, as the domain sees it (SQLite's own errors never leave the store package).

    NameTaken             a run or sweep of that name exists
    IdempotencyKeyTaken   a run or sweep was already queued with that Idempotency-Key
    TerminalStateError    a transition out of a terminal status was attempted
    StoreVersionError     the store was written by a newer labrun
    StoreDamaged          the store file fails SQLite's check, or is missing where runs existed

A write that fails for a reason outside the service (a full disk, a read-only filesystem) becomes
``app.errors.InsufficientStorage`` or ``app.errors.StoreUnavailable`` (``app/store/db.py``).
"""

from __future__ import annotations


class NameTaken(RuntimeError):
    pass


class IdempotencyKeyTaken(RuntimeError):
    pass


class TerminalStateError(RuntimeError):
    """A transition out of a terminal status was attempted."""


class StoreVersionError(RuntimeError):
    """The store was written by a newer labrun: this code would misread it."""


class StoreDamaged(RuntimeError):
    """The store file is damaged, or missing or empty where the state folder shows that runs existed: the
    service refuses to start on it (it would lose or misread every run)."""
