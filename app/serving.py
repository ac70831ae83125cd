"""How the HTTP server treats slow clients: a bound on the time a client takes to send a whole request.

uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but nothing else: a
connection that never sends a byte, or sends a request head or body one byte a second, stays open for ever
(each byte even cancels the keep-alive timer). ``RequestTimeoutProtocol`` adds one timer to uvicorn's
httptools protocol. It starts when the server waits for a request: the connection opened, a response was
sent, or the first byte came after one; it stops once the request has fully arrived, head and body. If it
fires, the connection is closed with no response, as a reverse proxy does (an app still waiting for the
body sees the client disconnect). What it does not bound (how many connections, a client that reads the
response slowly) is a reverse proxy's job: docs/operations.md, "Slow clients and a reverse proxy".
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("labrun.serving")


class RequestTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request takes longer than
    ``request_timeout_s`` to arrive. Build the class for a setting with ``protocol_with_timeout``."""

    request_timeout_s: ClassVar[float] = 10.0
    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The first bytes after an idle keep-alive wait start the next request: its time starts now, so
        # the idle wait (bounded by keep-alive) does not eat into it. Later bytes cancel nothing here.
        if self.timeout_keep_alive_task is not None:
            self._arm_request_timer()
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        self._disarm_request_timer()  # the connection is no longer an HTTP request's
        super().handle_websocket_upgrade()

    def on_message_complete(self) -> None:
        # Only the request being waited for stops the timer: the tail of a body the app answered without
        # reading also ends here, after the timer was armed again for the next request.
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_request_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer exactly when it starts waiting for the next request (nothing
        # pipelined, the connection stays open): so does this one. Data cancels keep-alive, not this.
        if self.timeout_keep_alive_task is not None:
            self._arm_request_timer()

    def _arm_request_timer(self) -> None:
        self._disarm_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout_s, self._request_timed_out)

    def _disarm_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing():
            log.debug("closing %s: no whole request within %s s", self.client, self.request_timeout_s)
            self.transport.close()


def protocol_with_timeout(request_timeout_s: float) -> type[RequestTimeoutProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` (uvicorn builds one instance per connection)."""
    return type("RequestTimeoutProtocol", (RequestTimeoutProtocol,), {"request_timeout_s": request_timeout_s})
