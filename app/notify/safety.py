"""Where a destination may make the server connect.

A destination is a URL a user typed; sending to it makes the server open a connection. By default a
destination may not reach loopback, private, link-local, multicast, reserved or unspecified addresses (the
cloud metadata address 169.254.169.254 is link-local), and only the schemes LABRUN_NOTIFY_SCHEMES names.
LABRUN_NOTIFY_ALLOW_HOSTS names exceptions: host names (matched exactly, before DNS) or networks (matched
against every address the name resolves to).

The check runs when a destination is added (a quick refusal, 422) and again at every delivery, after DNS:
a name that resolved to a public address yesterday may resolve to 127.0.0.1 today. The signed webhook then
connects to the very address that was checked. Apprise's own destinations do their own DNS and connect:
between our check and its connect a name could change (DNS rebinding within the record's lifetime). That
residual risk is documented in docs/notifications.md; the fixed-host services (Slack, Teams, Discord,
Telegram) connect to their vendors' hosts only.

Errors say what was refused in general terms ("resolves to an address that is not allowed"), never which
address, so that a user cannot map the server's network through them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from app.notify.errors import Refused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Services whose URLs carry tokens where a host would be: Apprise connects to the vendor's fixed host.
FIXED_HOST_SCHEMES = frozenset({"slack", "msteams", "discord", "tgram", "pover", "pbul"})


class NetworkPolicy:
    def __init__(
        self,
        schemes: Sequence[str],
        allow_hosts: Sequence[str],
        resolve: Callable[..., list[Any]] = socket.getaddrinfo,
    ) -> None:
        """``resolve``: the name service (``socket.getaddrinfo``; tests give a DNS that changes its mind)."""
        self.resolve = resolve
        self.schemes = frozenset(s.lower() for s in schemes)
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in allow_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def check_scheme(self, scheme: str) -> None:
        if scheme.lower() not in self.schemes:
            allowed = ", ".join(sorted(self.schemes)) or "none"
            raise Refused(
                f"destinations of the kind {scheme}:// are not allowed on this server (allowed: {allowed}); "
                "an admin may allow more with LABRUN_NOTIFY_SCHEMES"
            )

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses ``host`` resolves to, every one of them allowed; Refused otherwise."""
        host = host.strip("[]").lower().rstrip(".")
        if not host:
            raise Refused("the destination names no host")
        try:
            infos = self.resolve(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            raise Refused(f"the host {host!r} of the destination cannot be resolved") from None
        found = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if host in self.hosts:
            return found
        for address in found:
            if not self._allowed(address):
                raise Refused(
                    f"the host {host!r} resolves to an address that destinations may not reach (loopback, "
                    "private or link-local); an admin may allow it with LABRUN_NOTIFY_ALLOW_HOSTS"
                )
        return found

    def _allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast
