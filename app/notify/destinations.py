"""A user's destinations: check a URL, add it (sealed), list, remove, test. Each call acts for one user,
on that user's destinations only; another's are "not found", never "forbidden" (their ids say nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from app.notify import sending, webhook
from app.notify.errors import DestinationNotFound, InvalidDestination, Refused
from app.notify.events import SERVER, parse_events
from app.notify.message import probe_message
from app.notify.safety import NetworkPolicy
from app.notify.sealing import Sealer
from app.store.outbox import Destination, OutboxStore

MAX_URL_CHARS = 4096
MAX_PER_USER = 50


@dataclass(frozen=True)
class Added:
    destination: Destination
    signing_secret: str | None  # the webhook's, shown this once


class Destinations:
    def __init__(self, store: OutboxStore, sealer: Sealer, policy: NetworkPolicy, timeout: float) -> None:
        self.store, self.sealer, self.policy, self.timeout = store, sealer, policy, timeout

    def add(self, owner: str, url: str, events: Sequence[str] | None = None) -> Added:
        """``events``: its own filter (None: every event its owner's choices send to it)."""
        url = url.strip()
        chosen = None if events is None else parse_events(events, server=owner == SERVER)
        kind, label = self.check(url)
        if len(self.store.destinations(owner)) >= MAX_PER_USER:
            raise InvalidDestination(f"you have {MAX_PER_USER} destinations already; remove one first")
        secret = webhook.new_secret() if kind == "webhook" else None
        sealed = self.sealer.seal(sending.Secret(url, secret).dumps())
        added = self.store.add_destination(owner, kind, label, sealed)
        if chosen is not None:
            self.store.set_filter(added.id, chosen)
            added = replace(added, events=chosen)
        return Added(added, secret)

    def set_filter(self, owner: str, id: int, events: Sequence[str] | None) -> Destination:
        """Which events this destination gets (None: every event its owner's choices send)."""
        found = self.get(owner, id)
        chosen = None if events is None else parse_events(events, server=owner == SERVER)
        self.store.set_filter(id, chosen)
        return replace(found, events=chosen)

    def check(self, url: str) -> tuple[str, str]:
        """(kind, masked label) of a usable URL; InvalidDestination (422) naming what is wrong."""
        if not url or len(url) > MAX_URL_CHARS or any(c in url for c in "\r\n\t "):
            raise InvalidDestination(
                f"expected one destination URL (at most {MAX_URL_CHARS} characters, no spaces), such as "
                "mailto://..., slack://... or labrun+https://host/path"
            )
        scheme = sending.scheme_of(url)
        try:
            self.policy.check_scheme(scheme)
            if scheme.startswith(webhook.PREFIX):
                inner = webhook.target(url)
                self.policy.addresses(inner.host, inner.port or 443)
                return "webhook", f"{scheme}://{inner.netloc.decode()}/…"
            plugin = sending.apprise_plugin(url)
            if plugin is None:
                raise InvalidDestination(
                    f"this {scheme}:// URL is not one Apprise understands; see Apprise's list of services "
                    "for the URL form of yours"
                )
            sending.check_hosts(plugin, scheme, self.policy)
        except Refused as exc:
            raise InvalidDestination(str(exc)) from None
        return "apprise", _label(plugin.url(privacy=True))

    def list(self, owner: str) -> list[Destination]:
        found = self.store.destinations(owner)
        filters = self.store.filters([d.id for d in found])
        return [replace(d, events=filters.get(d.id)) for d in found]

    def get(self, owner: str, id: int) -> Destination:
        found = self.store.destination(id)
        if found is None or found.owner != owner:
            raise DestinationNotFound(id, server=owner == SERVER)
        return found

    def remove(self, owner: str, id: int) -> None:
        if not self.store.remove_destination(owner, id):
            raise DestinationNotFound(id, server=owner == SERVER)

    def test(self, owner: str, id: int) -> str | None:
        """Send a test message now; None when it got through (a paused destination resumes), else why not."""
        destination = self.get(owner, id)
        secret = sending.Secret.loads(self.sealer.open(destination.sealed))
        error = sending.send(secret, probe_message(owner), self.policy, self.timeout)
        if error is None:
            self.store.destination_worked(id)
        return error


def _label(private: str) -> str:
    """Apprise's masked URL, without its query (options, and sometimes tokens)."""
    parts = urlsplit(private)
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
