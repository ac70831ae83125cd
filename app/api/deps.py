"""Dependencies as Annotated aliases, so route signatures read like types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.lifecycle import RunManager


def get_manager(request: Request) -> RunManager:
    return request.app.state.manager


ManagerDep = Annotated[RunManager, Depends(get_manager)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="a repeated POST with the same key returns the same run",
    ),
]
