"""One delivery to one destination: through the signed webhook (``webhook.py``) or Apprise.

Apprise is imported here, lazily, on the first check or send. Every destination's host is checked against
the safety policy at each send, after DNS (``safety.py``). A failure comes back as a short reason in general
terms (what a user may see), never an address or a URL.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import httpx

from app.notify import webhook
from app.notify.errors import Refused
from app.notify.message import Message
from app.notify.safety import FIXED_HOST_SCHEMES, NetworkPolicy

log = logging.getLogger("labrun.notify")
_apprise_lock = threading.Lock()


@dataclass(frozen=True)
class Secret:
    """A destination's sealed content, opened: its URL, and the webhook's signing secret."""

    url: str
    signing_secret: str | None = None

    def dumps(self) -> str:
        return json.dumps({"url": self.url, "signing_secret": self.signing_secret})

    @classmethod
    def loads(cls, text: str) -> Secret:
        raw = json.loads(text)
        return cls(raw["url"], raw.get("signing_secret"))


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def apprise_plugin(url: str) -> Any:
    """Apprise's object for ``url``, or None if Apprise does not understand it."""
    with _apprise_lock, warnings.catch_warnings():
        # Apprise loads its plugins on first use; some import modules this Python deprecates (imghdr)
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise  # lazily: only the worker and a destination's check need it

        logging.getLogger("apprise").setLevel(logging.CRITICAL)  # its messages may quote a URL's secrets
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def check_hosts(plugin: Any, scheme: str, policy: NetworkPolicy) -> None:
    """Every host an Apprise destination will connect to, resolved and checked (Refused if one may not be
    reached). The fixed-host services connect only to their vendors'."""
    if scheme in FIXED_HOST_SCHEMES:
        return
    port = int(getattr(plugin, "port", None) or 443)
    hosts = {getattr(plugin, "host", None), getattr(plugin, "smtp_host", None)}
    for host in sorted(h for h in hosts if h):
        policy.addresses(str(host), port)


def send(
    secret: Secret,
    message: Message,
    policy: NetworkPolicy,
    timeout: float,
    connections: webhook.Connections | None = None,
) -> str | None:
    """Deliver ``message``; None when it got through, else why not (in general terms). ``connections``:
    the webhook's kept connections (the worker's), else a connection of its own."""
    scheme = scheme_of(secret.url)
    try:
        policy.check_scheme(scheme)
        if scheme.startswith(webhook.PREFIX):
            signing = secret.signing_secret or ""
            webhook.send(secret.url, signing, message.body, policy, timeout, connections)
            return None
        return _send_apprise(secret.url, scheme, message, policy, timeout)
    except Refused as exc:
        return str(exc)
    except httpx.HTTPStatusError as exc:
        return f"the receiver answered HTTP {exc.response.status_code}"
    except httpx.TimeoutException:
        return f"no answer within {timeout:g} s"
    except httpx.HTTPError:
        return "the receiver could not be reached"
    except Exception as exc:  # a plugin's bug must not end the worker; its text may hold secrets
        log.warning("a notification failed unexpectedly: %s", type(exc).__name__)
        return "the delivery failed unexpectedly"


def _send_apprise(
    url: str, scheme: str, message: Message, policy: NetworkPolicy, timeout: float
) -> str | None:
    plugin = apprise_plugin(url)
    if plugin is None:
        return "the destination URL is no longer understood"
    check_hosts(plugin, scheme, policy)
    for attribute in ("socket_connect_timeout", "socket_read_timeout", "timeout"):
        if hasattr(plugin, attribute):
            setattr(plugin, attribute, timeout)
    if plugin.notify(body=message.text, title=message.title):
        return None
    return f"the {scheme} service did not accept the message (or could not be reached)"
