"""Notification errors, as the API translates them (subclasses of the domain's: 422 and 404)."""

from __future__ import annotations

from app.errors import InvalidRun, NotFound


class InvalidDestination(InvalidRun):
    """A destination URL that cannot be used: not understood, a scheme not allowed, or a place the server
    may not connect to (the message says which, and what to do)."""


class DestinationNotFound(NotFound):
    def __init__(self, id: int, server: bool = False) -> None:
        if server:
            super().__init__(f"no server-wide destination {id} (`labrun notify ls --server` lists them)")
        else:
            super().__init__(f"you have no notification destination {id} (`labrun notify ls` lists yours)")


class Refused(Exception):
    """A delivery the safety policy refused at send time (the message is safe to show its owner)."""
