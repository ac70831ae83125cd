"""Slow clients against a real ``python -m app``: a connection whose request does not arrive whole within
LABRUN_REQUEST_READ_TIMEOUT_S is closed (app/serving.py), while others are answered and a long response is
never cut. The figures for many connections at once are bench/slow_clients_bench.py's."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import pytest
from service_helpers import ServiceProcess, submit, wait_for

TIMEOUT_S = 1.0
HEAD = b"GET /healthz HTTP/1.1\r\nHost: labrun\r\n\r\n"
# Sent one byte every 0.1 s, these would take longer than the test watches (so without a bound, nothing
# at all would happen to them within it).
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: labrun\r\nX-Slow: " + b"x" * 80 + b"\r\n\r\n"
BODY = b'{"overrides": [' + b" " * 80 + b'"model=fno"]}'
POST_HEAD = (
    b"POST /runs HTTP/1.1\r\nHost: labrun\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
)


class SlowClient:
    """A raw connection: sends ``first`` at once, then ``trickle`` one byte every ``step_s``."""

    def __init__(self, port: int, first: bytes = b"", trickle: bytes = b"", answered_first: bool = False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.opened = time.monotonic()
        self.trickle = trickle
        self.closed_after: float | None = None
        if first:
            self.sock.sendall(first)
        if answered_first:  # a whole request first: its response, then the clock restarts
            assert read_response(self.sock).startswith(b"HTTP/1.1 200")
            self.opened = time.monotonic()
        self.sock.setblocking(False)

    def step(self) -> None:
        """Send the next byte, if any; a refused send means the server closed the connection."""
        if self.closed_after is None and self.trickle:
            try:
                self.sock.send(self.trickle[:1])
                self.trickle = self.trickle[1:]
            except OSError:
                self.closed_after = time.monotonic() - self.opened

    def read(self) -> None:
        """Readable: the server closed it (an empty read or a reset); no response is sent."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        assert data == b"", f"a slow client got a response: {data[:200]!r}"
        self.closed_after = time.monotonic() - self.opened


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), however the server's writes were split."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(v)
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
        if k.lower() == b"content-length"
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def watch(clients: list[SlowClient], step_s: float, limit_s: float) -> None:
    """Trickle and watch every client until all are closed or ``limit_s`` has passed."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and any(c.closed_after is None for c in clients):
        for c in clients:
            c.step()
        with selectors.DefaultSelector() as sel:  # epoll: select() refuses descriptors past 1024
            for c in clients:
                if c.closed_after is None:
                    sel.register(c.sock, selectors.EVENT_READ, c)
            for key, _ in sel.select(step_s):
                key.data.read()


@pytest.fixture
def service(output_dir) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(output_dir, LABRUN_REQUEST_READ_TIMEOUT_S=str(TIMEOUT_S)).start()
    yield svc
    svc.stop()


def test_slow_and_idle_connections_are_closed_while_others_are_answered(service):
    port = service.port
    clients = {
        "idle": SlowClient(port),
        "head one byte at a time": SlowClient(port, trickle=SLOW_HEAD),
        "body one byte at a time": SlowClient(port, first=POST_HEAD, trickle=BODY),
        "idle after a response": SlowClient(port, first=HEAD, answered_first=True),
        "next head one byte at a time": SlowClient(port, first=HEAD, trickle=SLOW_HEAD, answered_first=True),
    }
    try:
        assert service.http.get("/healthz").status_code == 200  # answered while they hang on
        watch(list(clients.values()), step_s=0.1, limit_s=TIMEOUT_S + 4)
    finally:
        for client in clients.values():  # the server closed its end; this is ours
            client.sock.close()
    closed = {name: c.closed_after for name, c in clients.items()}
    for name, after in closed.items():
        # Never before the bound (the timer, not something else, closed it), and soon after it.
        assert after is not None, (name, closed)
        assert TIMEOUT_S - 0.05 <= after <= TIMEOUT_S + 1.5, (name, closed)
    assert service.http.get("/healthz").status_code == 200
    assert service.http.get("/runs").json()["count"] == 0  # the slow POST never reached the store


def test_a_response_longer_than_the_bound_is_not_cut(service):
    run = submit(service.http, "+extra.fake_sleep=2.5")
    started = time.monotonic()
    follow = {"follow": "true"}
    with (
        service.client() as client,
        client.stream("GET", f"/runs/{run['name']}/logs", params=follow) as response,
    ):
        assert response.status_code == 200
        text = "".join(response.iter_text())  # ends with the run, not with a closed connection
    assert time.monotonic() - started > TIMEOUT_S * 2
    assert wait_for(service.http, run["name"])["status"] == "succeeded", text
