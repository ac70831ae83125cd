"""Who is calling: ``Authorization: Bearer <token>`` checked against the users in the store.

Auth is on when the setting says "on", or, by default ("auto"), as soon as the store has had a user. It
never switches itself off again: revoking the last user leaves a server nobody can use without a new
token, not one anybody can use. Only an admin restarting the service with ``LABRUN_AUTH=off`` opens such a
server, and the start-up log says so loudly. With auth off (a loopback service that never had users:
``make run``) every caller is the admin-like ``local``. Every route but ``/healthz``, the OpenAPI docs and
the dashboard's static page requires it (``require_caller`` on the routers).

A token is checked against the store on every request (no cache: one indexed query, a few microseconds,
so a revoke, even from the server's command line in another process, refuses the very next request), and
an open log stream checks its token again every ``TOKEN_RECHECK_S``: a revoke takes effect within that
bound. A cache of tokens added later must keep both.

Failed logins (a wrong or revoked token) are throttled per client address (``LoginThrottle``): past a
number per minute, a wrong token gets 429 with ``Retry-After``; each counted failure is logged with the
address. A request without any token guesses nothing, and gets its plain 401. A valid token is never throttled,
so an attacker behind the same address (a lab's NAT) cannot lock the others out. Tokens are never logged:
uvicorn's access log shows no headers, and nothing here logs one.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import Forbidden, TooManyLoginFailures, Unauthenticated
from app.models import RunRecord
from app.users import LOCAL, Users

log = logging.getLogger("labrun.auth")
USERS_CHECK_S = 1.0  # "auto", before the first user: whether one exists now is looked up this often
TOKEN_RECHECK_S = 1.0  # an open stream checks its token again this often (a revoke ends it within ~2 s)
THROTTLE_WINDOW_S = 60.0


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


class LoginThrottle:
    """Failed logins per client address in a sliding window of a minute; bounded memory (the addresses
    with the oldest failures are forgotten first)."""

    def __init__(
        self,
        failures_per_minute: int = 30,
        trusted_proxies: Sequence[str] = (),
        max_addresses: int = 10_000,
    ) -> None:
        self.limit, self.max_addresses = failures_per_minute, max_addresses
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The caller's address: the peer's, unless the peer is a proxy the admin named, which tells the
        client's in ``X-Forwarded-For`` (its last entry: the one that proxy added). From anyone else the
        header is the caller's own claim, and would let one attacker pose as every colleague."""
        if not forwarded_for or not self._trusted(peer):
            return peer
        return forwarded_for.split(",")[-1].strip() or peer

    def _trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try again, or None while it is under the limit."""
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - THROTTLE_WINDOW_S:
            times.popleft()
        if len(times) < self.limit:
            return None
        return times[0] + THROTTLE_WINDOW_S - now

    def failed(self, address: str, now: float) -> bool:
        """Note a failed login; whether ``address`` has now reached its limit (the next one is refused).
        Refused tries are not noted: a caller who keeps trying may try again one window after its last
        counted failure."""
        times = self._failures.pop(address, None) or deque()
        times.append(now)
        self._failures[address] = times  # the most recent at the end: the oldest are forgotten first
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return self.retry_after(address, now) is not None


class AuthPolicy:
    def __init__(self, mode: str, users: Users, throttle: LoginThrottle | None = None) -> None:
        self.mode, self.users = mode, users
        self.throttle = throttle if throttle is not None else LoginThrottle()  # (an empty one is falsy)
        self._known: tuple[float, bool] = (0.0, False)

    def required(self) -> bool:
        if self.mode != "auto":
            return self.mode == "on"
        checked_at, had_users = self._known
        if had_users:  # once on, on for good: only a restart with LABRUN_AUTH=off opens the server
            return True
        now = time.monotonic()
        if now - checked_at > USERS_CHECK_S:
            had_users = self.users.ever_had_users()
            self._known = (now, had_users)
        return had_users

    def caller(self, authorization: str | None, address: str = "?") -> Caller:
        if not self.required():
            return Caller(LOCAL, True)
        token = _bearer_token(authorization)
        if token is None:  # no guess made: nothing to throttle
            raise Unauthenticated(
                "this server needs a token: send 'Authorization: Bearer <token>' (the labrun CLI reads "
                "LABRUN_TOKEN); an admin creates one with: python -m app users add <name>"
            )
        user = self.users.authenticate(token)
        if user is not None:
            return Caller(user.name, user.is_admin)
        self._refuse(address)
        raise Unauthenticated(
            "the token is wrong or was revoked; ask an admin for a new one (python -m app users token <name>)"
        )

    def _refuse(self, address: str) -> None:
        """Count a failed login (the caller then gets 401), or, once the address has reached its limit,
        raise 429. Each counted failure is logged, so the log holds at most the limit per address and
        minute, and the moment throttling starts."""
        now = time.monotonic()
        wait = self.throttle.retry_after(address, now)
        if wait is None:
            log.warning("failed login from %s: a wrong or revoked token", address)
            if self.throttle.failed(address, now):
                log.warning(
                    "throttling %s: %d failed logins within %d s; its wrong tokens get 429 for a while",
                    address,
                    self.throttle.limit,
                    int(THROTTLE_WINDOW_S),
                )
            return
        raise TooManyLoginFailures(
            f"too many failed logins from your address; try again in {int(wait) + 1} s with a valid token",
            retry_after=int(wait) + 1,
        )

    def known_caller(self, authorization: str | None) -> Caller | None:
        """The caller when the credentials are good now; None otherwise, with nothing counted or raised (the
        polls answered before routing, ``app/api/polls.py``, then hand the request to its route, whose
        ``caller`` refuses it as always)."""
        if not self.required():
            return Caller(LOCAL, True)
        token = _bearer_token(authorization)
        user = self.users.authenticate(token) if token is not None else None
        return Caller(user.name, user.is_admin) if user is not None else None

    def still_valid(self, authorization: str | None) -> bool:
        """Whether a request's credentials are still good now (an open stream asks again and again)."""
        if not self.required():
            return True
        token = _bearer_token(authorization)
        return token is not None and self.users.authenticate(token) is not None


def _bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    return token if scheme.lower() == "bearer" and token.strip() else None


def client_address(request: Request, throttle: LoginThrottle) -> str:
    peer = request.client.host if request.client else "?"
    return throttle.client_address(peer, request.headers.get("x-forwarded-for"))


async def get_caller(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="Bearer <token>", include_in_schema=False)
    ] = None,
) -> Caller:
    auth: AuthPolicy = request.app.state.auth
    return auth.caller(authorization, client_address(request, auth.throttle))


def token_check(request: Request) -> Callable[[], bool]:
    """For a long answer (a log stream): whether the request's token is still good, asked as it goes."""
    auth: AuthPolicy = request.app.state.auth
    authorization = request.headers.get("authorization")
    return lambda: auth.still_valid(authorization)


CallerDep = Annotated[Caller, Depends(get_caller)]
require_caller = Depends(get_caller)


async def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden(f"only an admin may do this; {caller.name!r} is not one")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
