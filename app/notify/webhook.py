"""The signed JSON webhook, for a lab's own scripts: ``labrun+https://host/path`` (``labrun+http://`` only
where an admin allows that scheme).

The body is the message's JSON (``message.py``, with a ``version`` field); the headers:

    X-Labrun-Event       the event's kind (succeeded, failed, cancelled, sweep_finished, preempted, resumed, a server event, test)
    X-Labrun-Delivery    the event's id: the same on every retry, so a receiver can drop a repeat
    X-Labrun-Timestamp   seconds since the epoch when this try was signed
    X-Labrun-Signature   sha256=<hex HMAC-SHA256 of "<timestamp>." + body, keyed with the signing secret>

The server makes the secret (shown once, when the destination is added). The connection goes to the
address the safety check approved (the name is resolved once, checked, and that address connected; TLS
still checks the certificate against the name).

The delivery worker keeps its connections between messages (``Connections``): a burst of messages to one
receiver reuses them instead of opening, and setting up TLS for, one per message. Every message is still
checked first (the name resolved again, every address allowed), and the request names the checked address
itself: the kept connections are pooled by address, so a message only ever travels on a connection to the
address checked for it. A name that now resolves somewhere it may not go is refused before any connection
is looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

import httpx

from app.notify.errors import Refused
from app.notify.safety import NetworkPolicy

PREFIX = "labrun+"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def target(url: str) -> httpx.URL:
    """The http(s) URL inside ``labrun+http(s)://...``; Refused if it is not one."""
    inner = httpx.URL(url[len(PREFIX) :]) if url.lower().startswith(PREFIX) else None
    if inner is None or inner.scheme not in ("http", "https") or not inner.host:
        raise Refused("a webhook destination is labrun+https://HOST/PATH")
    return inner


KEPT_HOSTS = 64  # receivers whose connections are kept (the least recently used go first)
KEPT_PER_HOST = 4  # idle connections kept to one receiver
KEPT_IDLE_S = 30.0  # ... for at most this long


class Connections:
    """httpx clients kept between deliveries, one per receiver (scheme, host name, port): two names that
    share an address never share a TLS connection made for the other's name."""

    def __init__(self) -> None:
        self._clients: OrderedDict[tuple[str, str, int | None], httpx.Client] = OrderedDict()
        self._lock = threading.Lock()

    def client(self, inner: httpx.URL) -> httpx.Client:
        key = (inner.scheme, inner.host, inner.port)
        with self._lock:
            found = self._clients.get(key)
            if found is not None:
                self._clients.move_to_end(key)
                return found
            found = self._clients[key] = _client(KEPT_PER_HOST)
            while len(self._clients) > KEPT_HOSTS:
                _, old = self._clients.popitem(last=False)
                old.close()
            return found

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _client(keep: int) -> httpx.Client:
    limits = httpx.Limits(max_keepalive_connections=keep, keepalive_expiry=KEPT_IDLE_S)
    return httpx.Client(follow_redirects=False, trust_env=False, limits=limits)


def send(
    url: str,
    secret: str,
    body: dict[str, Any],
    policy: NetworkPolicy,
    timeout: float,
    connections: Connections | None = None,
) -> None:
    """POST the signed body to the checked address (on a kept connection to it, given ``connections``);
    raises Refused or httpx errors (a non-2xx answer raises ``httpx.HTTPStatusError``)."""
    inner = target(url)
    address = policy.addresses(inner.host, inner.port or (443 if inner.scheme == "https" else 80))[0]
    host = f"[{address}]" if address.version == 6 else str(address)
    pinned = inner.copy_with(host=host)
    data = json.dumps(body, separators=(",", ":")).encode()
    stamp = str(int(time.time()))
    headers = {
        "Host": inner.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": "labrun-notify/1",
        "X-Labrun-Event": str(body.get("event")),
        "X-Labrun-Delivery": str(body.get("id")),
        "X-Labrun-Timestamp": stamp,
        "X-Labrun-Signature": signature(secret, stamp, data),
    }
    extensions = {"sni_hostname": inner.host} if inner.scheme == "https" else {}
    if connections is None:  # one message (a test): a connection of its own
        with _client(0) as client:
            _post(client, pinned, data, headers, extensions, timeout)
    else:
        _post(connections.client(inner), pinned, data, headers, extensions, timeout)


def _post(
    client: httpx.Client,
    url: httpx.URL,
    data: bytes,
    headers: dict[str, str],
    extensions: dict[str, Any],
    timeout: float,
) -> None:
    request = client.build_request(
        "POST", url, content=data, headers=headers, extensions=extensions, timeout=timeout
    )
    response = client.send(request)
    response.read()  # the body read and the connection handed back to the pool before anything is raised
    response.raise_for_status()
