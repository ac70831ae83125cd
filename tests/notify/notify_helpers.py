"""Shared by the notification tests (imported by name: ``from notify_helpers import ...``): a webhook
receiver that checks signatures, and the service settings the tests use."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from pathlib import Path

from werkzeug import Request, Response

LOOPBACK = "127.0.0.1,::1,localhost"


class Receiver:
    """A webhook receiver: every POST to /hook kept (with its signature checked once a secret is set);
    ``down`` makes it answer 503."""

    def __init__(self, server, path: str = "/hook") -> None:
        self.server, self.path = server, path
        self.secret: str | None = None
        self.down = False
        self.received: list[dict] = []
        self.refused = 0
        self.bad_signatures = 0
        self._lock = threading.Lock()
        server.expect_request(path, method="POST").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return "labrun+" + self.server.url_for(self.path)

    def _handle(self, request: Request) -> Response:
        if self.down:
            with self._lock:
                self.refused += 1
            return Response("down", status=503)
        body = request.get_data()
        stamp = request.headers.get("X-Labrun-Timestamp", "")
        if self.secret is not None:
            expected = (
                "sha256="
                + hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            )
            if not hmac.compare_digest(expected, request.headers.get("X-Labrun-Signature", "")):
                with self._lock:
                    self.bad_signatures += 1
                return Response("bad signature", status=401)
        with self._lock:
            self.received.append({"headers": dict(request.headers), "body": json.loads(body)})
        return Response("ok")

    def events(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            return [r["body"] for r in self.received if kind is None or r["body"]["event"] == kind]

    def wait(self, n: int, kind: str | None = None, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(found := self.events(kind)) < n:
            assert time.monotonic() < deadline, f"{len(found)} of {n} messages arrived: {self.events()}"
            time.sleep(0.05)
        return found


def notify_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "LABRUN_SECRET_KEY_FILE": str(tmp_path / "keys" / "secret.key"),
        "LABRUN_NOTIFY_SCHEMES": "labrun+http,labrun+https,mailto,json",
        "LABRUN_NOTIFY_ALLOW_HOSTS": LOOPBACK,
        "LABRUN_NOTIFY_RETRY_BASE_S": "0.2",
        "LABRUN_NOTIFY_RETRY_MAX_S": "0.5",
        "LABRUN_NOTIFY_POLL_S": "0.05",
        "LABRUN_NOTIFY_TIMEOUT_S": "3",
        "LABRUN_MAX_CPU_RUNS": "4",
        "LABRUN_PUBLIC_URL": "https://labrun.example:8000",
    }
    env.update(extra)
    return env
