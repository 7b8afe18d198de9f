"""Where a webhook may point: never into the service's own network (SSRF).

A URL is checked when it is registered and again before every delivery, since a name can resolve
elsewhere later (DNS rebinding). The delivery then connects to the very address that was checked
(`Destination.pinned_url`, the host name kept for the Host header and TLS), so a second lookup
cannot slip in between. Names are resolved by the event loop's resolver, in a thread: the loop
never blocks on DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

from consent.domain.errors import DomainError

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}


def forbidden(detail: str) -> DomainError:
    return DomainError("webhook_url_forbidden", detail)


class Destination(NamedTuple):
    """A checked URL and the address to connect to (None: connect by name, the host being allowed as is)."""

    url: str
    host: str
    address: str | None

    def pinned_url(self) -> str:
        if self.address is None:
            return self.url
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = literal + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()


class UrlGuard:
    def __init__(self, allow_http: bool, allowed_hosts: tuple[str, ...]) -> None:
        self._schemes = ("https", "http") if allow_http else ("https",)
        self._allowed = {entry.lower() for entry in allowed_hosts}

    def check_form(self, url: str) -> SplitResult:
        """The URL's shape only: a scheme this service sends to, a host, no credentials, no fragment."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise forbidden("the URL is malformed") from None
        if len(url) > MAX_URL_LENGTH or parts.scheme not in self._schemes or not parts.hostname:
            plain = " or http://" if "http" in self._schemes else ""
            raise forbidden(f"a webhook URL is an absolute https://{plain} URL of at most {MAX_URL_LENGTH} "
                            "characters")
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise forbidden("a webhook URL carries no user name, password or fragment")
        if port == 0:
            raise forbidden("port 0 is not a port")
        return parts

    async def destination(self, url: str) -> Destination:
        """The URL checked, resolved, and every address it resolves to a public one (or the host allowed)."""
        parts = self.check_form(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        if host in self._allowed or f"{host}:{port}" in self._allowed:
            return Destination(url, host, None)
        try:
            literal = ipaddress.ip_address(host)
            addresses = [literal]
        except ValueError:
            try:
                found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                raise forbidden(f"the host {host!r} does not resolve") from None
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found]
        refused = [address for address in addresses if not is_public(address)]
        if refused or not addresses:
            raise forbidden(f"the host {host!r} resolves to a loopback, private, link-local, multicast or "
                            "unspecified address; an operator may allow it (CONSENT_WEBHOOK_ALLOWED_HOSTS)")
        return Destination(url, host, str(addresses[0]))


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    if mapped is not None:
        address = mapped
    return not (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
                or address.is_unspecified or address.is_reserved)
