"""Where a site lives, and the gRPC target that reaches it.

A gRPC address takes one of three forms, the same for ``--endpoint``, the
address given to ``ep info``/``ep accept``/... and a site list:

* ``HOST:PORT``: one server, as gRPC does by default (the name is resolved
  once per connection and calls go to the first address that answers).
* ``dns:///NAME:PORT`` (or ``dns://RESOLVER/NAME:PORT``): every address the
  name has; gRPC re-resolves it when connections fail and spreads calls
  over the addresses (``round_robin``). For a name whose records list a
  site's replicas, such as a Kubernetes headless Service.
* ``HOST:PORT,HOST:PORT,...``: the replicas of one site; calls are spread
  over them (``round_robin``) and a replica that is down is skipped. gRPC
  takes such a list only as IP addresses of one family (its ``ipv4:`` and
  ``ipv6:`` targets), so names in the list are looked up when the channel
  is made, and not again while it lives.

Spreading is per call, not per connection: one client sending many calls
reaches every replica that is up.

A site that speaks the IVOA note's HTTP interface instead is named by its
base URL, ``http://HOST[:PORT]/PATH`` or ``https://...`` (:func:`parse_url`):
``ep ask`` and :meth:`~ep_server.client.Client.ask` post the question to
``{url}accept``. Such a site is asked, never booked or described.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ROUND_ROBIN",
    "Target",
    "TargetError",
    "is_url",
    "look_up",
    "look_up_blocking",
    "names_to_look_up",
    "parse_address",
    "parse_endpoint",
    "parse_url",
    "replicas",
    "target",
]

#: Channel options that spread calls over every address of a target: gRPC's
#: ``round_robin`` load-balancing policy, given as the channel's default
#: service config (a service config published in DNS would take precedence).
ROUND_ROBIN: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(ValueError):
    """An address list gRPC cannot use: names that did not resolve, or
    replicas reachable only over different IP versions."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a gRPC channel is made with: its target string and the options
    that go with it (round-robin spreading, the authority of a list)."""

    target: str
    options: tuple[tuple[str, Any], ...] = ()


def parse_address(text: str) -> str:
    """Check ``HOST:PORT`` (``[::1]:50051`` for IPv6) and return it.

    :raises ValueError: saying what is wrong.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, got {port!r} in {text!r}")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"unbalanced brackets in {text!r} (IPv6 is written [::1]:50051)")
    return text


def parse_endpoint(text: str) -> str:
    """Check an address in any of the three forms and return it, a list
    without the blanks around its commas.

    :raises ValueError: saying what is wrong.
    """
    if text.startswith("dns:"):
        _dns_name(text)
        return text
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 1 and not all(parts):
        raise ValueError(f"an empty entry in the address list {text!r}")
    for part in parts:
        if part.startswith("dns:"):
            raise ValueError(f"{part!r}: a dns: name stands alone, not in a list")
        parse_address(part)
    return ",".join(parts)


_URL_SCHEMES = ("http://", "https://")


def is_url(text: str) -> bool:
    """True for an ``http://`` or ``https://`` URL: a site asked in the
    note's HTTP interface, not over gRPC."""
    return text[:8].lower().startswith(_URL_SCHEMES)


def parse_url(text: str) -> str:
    """Check the base URL of a site that speaks the note's HTTP interface
    and return it with a lower-case scheme and host and a path ending in
    ``/`` (the question goes to ``{url}accept``).

    :raises ValueError: saying what is wrong.
    """
    if not text.isprintable() or " " in text:
        raise ValueError(f"{text!r}: a URL has no spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"expected http://HOST[:PORT]/PATH or https://..., got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r}: no user or password in the URL (send a bearer token)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{text!r}: a site's base URL has no query or fragment")
    if port == 0:
        raise ValueError(f"port must be a number from 1 to 65535 in {text!r}")
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{scheme}://{netloc}{path}"


def _dns_name(text: str) -> str:
    """The ``NAME:PORT`` of ``dns:///NAME:PORT`` or ``dns://RESOLVER/NAME:PORT``."""
    rest = text.removeprefix("dns:")
    if not rest.startswith("//"):
        raise ValueError(f"expected dns:///NAME:PORT, got {text!r}")
    resolver, slash, name = rest[2:].partition("/")
    if not slash or "/" in name or (resolver and not resolver.strip()):
        raise ValueError(f"expected dns:///NAME:PORT or dns://RESOLVER/NAME:PORT, got {text!r}")
    try:
        return parse_address(name)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def replicas(address: str) -> list[str]:
    """The ``HOST:PORT`` entries of an address list (one for a single address)."""
    return [] if address.startswith("dns:") else [part.strip() for part in address.split(",")]


def _split(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def names_to_look_up(address: str) -> list[str]:
    """The host names (not IP addresses) in an address list of two or more
    replicas: what must be looked up before gRPC can take the list."""
    entries = replicas(address)
    if len(entries) < 2:
        return []
    hosts = (_split(entry)[0] for entry in entries)
    return list(dict.fromkeys(host for host in hosts if _literal(host) is None))


Found = Mapping[str, Sequence[IPAddress]]


def target(address: str, found: Found | None = None) -> Target:
    """The gRPC target for ``address``; ``found`` holds the addresses of the
    names in a list (see :func:`look_up`).

    :raises TargetError: when a name was not found, or the replicas have no
        IP version in common.
    """
    if address.startswith("dns:"):
        return Target(address, ROUND_ROBIN)
    entries = replicas(address)
    if len(entries) == 1:
        return Target(address)
    family = _family(entries, found or {})
    endpoints: list[str] = []
    for entry in entries:
        host, port = _split(entry)
        literal = _literal(host)
        hosts = [literal] if literal is not None else list((found or {}).get(host, ()))
        for ip in hosts:
            if ip.version == family:
                endpoints.append(f"{ip}:{port}" if family == 4 else f"[{ip}]:{port}")
    scheme = "ipv4" if family == 4 else "ipv6"
    authority = (("grpc.default_authority", entries[0]),)
    return Target(f"{scheme}:{','.join(dict.fromkeys(endpoints))}", ROUND_ROBIN + authority)


def _family(entries: list[str], found: Found) -> int:
    """4 when every replica has an IPv4 address, else 6 when every one has
    an IPv6 address (gRPC's ipv4:/ipv6: targets take one version)."""
    versions: list[set[int]] = []
    for entry in entries:
        host = _split(entry)[0]
        literal = _literal(host)
        if literal is not None:
            versions.append({literal.version})
        elif found.get(host):
            versions.append({ip.version for ip in found[host]})
        else:
            raise TargetError(f"{host!r} has no address")
    for family in (4, 6):
        if all(family in v for v in versions):
            return family
    raise TargetError(
        "the replicas have no IP version in common (gRPC takes a list of IPv4 or of IPv6 "
        "addresses): list one version's addresses, or give each replica as a site of its own"
    )


async def look_up(address: str) -> dict[str, list[IPAddress]]:
    """The addresses of every name in an address list, looked up at once
    and off the event loop.

    :raises TargetError: naming a name that could not be looked up.
    """
    names = names_to_look_up(address)
    found = await asyncio.gather(*(_addresses(name) for name in names))
    return dict(zip(names, found, strict=True))


def look_up_blocking(address: str) -> dict[str, list[IPAddress]]:
    """:func:`look_up` for callers without an event loop: blocks while it
    looks the names up."""
    return {name: _ips(_getaddrinfo(name)) for name in names_to_look_up(address)}


async def _addresses(name: str) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetError(f"cannot look up {name!r}: {exc}") from None
    return _ips(infos)


def _getaddrinfo(name: str) -> list[Any]:
    try:
        return socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetError(f"cannot look up {name!r}: {exc}") from None


def _ips(infos: Sequence[Any]) -> list[IPAddress]:
    ips = (_literal(str(info[4][0]).partition("%")[0]) for info in infos)
    return list(dict.fromkeys(ip for ip in ips if ip is not None))
