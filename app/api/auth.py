"""Who is calling: ``Authorization: Bearer <token>`` checked against the users in the store.

Auth is on when the setting says "on", or, by default ("auto"), as soon as one user exists; with auth off
(a loopback service with no users: ``make run``) every caller is the admin-like ``local``. Every route but
``/healthz``, the OpenAPI docs and the dashboard's static page requires it (``require_caller`` on the
routers). Tokens are never logged: uvicorn's access log shows no headers, and nothing here logs one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import Forbidden, Unauthenticated
from app.models import RunRecord
from app.users import LOCAL, Users

USERS_CHECK_S = 1.0  # "auto": whether any user exists is looked up at most this often


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool

    def check_may_change(self, record: RunRecord, action: str) -> None:
        """Only a run's owner or an admin may change it (anyone may read it)."""
        if not (self.is_admin or record.owner == self.name):
            raise Forbidden(
                f"run {record.name!r} is {record.owner}'s; only they or an admin may {action} it "
                f"(you are {self.name})"
            )


class AuthPolicy:
    def __init__(self, mode: str, users: Users) -> None:
        self.mode, self.users = mode, users
        self._known: tuple[float, bool] = (0.0, False)

    def required(self) -> bool:
        if self.mode != "auto":
            return self.mode == "on"
        checked_at, exists = self._known
        now = time.monotonic()
        if now - checked_at > USERS_CHECK_S:
            exists = self.users.any_active()
            self._known = (now, exists)
        return exists

    def caller(self, authorization: str | None) -> Caller:
        if not self.required():
            return Caller(LOCAL, True)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "this server needs a token: send 'Authorization: Bearer <token>' (the labrun CLI reads "
                "LABRUN_TOKEN); an admin creates one with: python -m app users add <name>"
            )
        user = self.users.authenticate(token)
        if user is None:
            raise Unauthenticated(
                "the token is wrong or was revoked; ask an admin for a new one (python -m app users token <name>)"
            )
        return Caller(user.name, user.is_admin)


async def get_caller(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="Bearer <token>", include_in_schema=False)
    ] = None,
) -> Caller:
    return request.app.state.auth.caller(authorization)


CallerDep = Annotated[Caller, Depends(get_caller)]
require_caller = Depends(get_caller)


async def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden(f"only an admin may do this; {caller.name!r} is not one")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
