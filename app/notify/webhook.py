"""The signed JSON webhook, for a lab's own scripts: ``labrun+https://host/path`` (``labrun+http://`` only
where an admin allows that scheme).

The body is the message's JSON (``message.py``, with a ``version`` field); the headers:

    X-Labrun-Event       the event's kind (succeeded, failed, cancelled, sweep_finished, test)
    X-Labrun-Delivery    the event's id: the same on every retry, so a receiver can drop a repeat
    X-Labrun-Timestamp   seconds since the epoch when this try was signed
    X-Labrun-Signature   sha256=<hex HMAC-SHA256 of "<timestamp>." + body, keyed with the signing secret>

The server makes the secret (shown once, when the destination is added). The connection goes to the
address the safety check approved (the name is resolved once, checked, and that address connected; TLS
still checks the certificate against the name).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
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


def send(url: str, secret: str, body: dict[str, Any], policy: NetworkPolicy, timeout: float) -> None:
    """POST the signed body to the checked address; raises Refused or httpx errors (a non-2xx answer
    raises ``httpx.HTTPStatusError``)."""
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
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("POST", pinned, content=data, headers=headers, extensions=extensions)
        client.send(request).raise_for_status()
