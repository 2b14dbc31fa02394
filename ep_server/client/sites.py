"""The site list: a small TOML file naming EP endpoints (the IVOA note's
"plain list" discovery)::

    [[site]]
    name = "lab"
    address = "ep.lab.example.org:50051"

    [[site]]
    name = "cloud"
    address = "ep.cloud.example.org:443"
    tls = { ca = "ca.pem", cert = "client.pem", key = "client.key", server_name = "ep" }

    [[site]]
    name = "replicated"
    addresses = ["ep1.example.org:50051", "ep2.example.org:50051"]

    [[site]]
    name = "inaf"
    url = "https://ep.inaf.example.org/"

``address`` takes any gRPC form :mod:`ep_server.client.targets` describes
(``HOST:PORT``, ``dns:///NAME:PORT``, replicas joined by commas);
``addresses`` lists a site's replicas, and calls are spread over them.
``url`` names a site that speaks the IVOA note's HTTP interface (any note
EP, ours or another's), asked with ``POST {url}accept``; a site has exactly
one of ``address``, ``addresses`` and ``url``.

``tls`` is optional. For a gRPC site, without it the connection is
plaintext, and an empty ``tls = {}`` means TLS with the system's root
certificates. For a URL the scheme decides: ``https://`` is TLS (with the
system's root certificates unless ``tls`` names a ``ca``), ``http://`` is
plaintext and takes no ``tls``. Relative paths are read relative to the
site file. ``cert`` and ``key`` (a client certificate) go together. Every
problem is reported at once, each naming its entry and key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ep_server.client.targets import is_url, parse_address, parse_endpoint, parse_url

__all__ = ["TLS", "Site", "SiteListError", "load_sites", "parse_address", "parse_sites"]

_SITE_KEYS = frozenset({"name", "address", "addresses", "url", "tls"})
_WHERE_KEYS = ("address", "addresses", "url")
_TLS_KEYS = ("ca", "cert", "key", "server_name")


class SiteListError(ValueError):
    """A site list that cannot be used; the message names every problem."""


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS settings for one site: PEM file paths and the expected server name.

    All ``None``: TLS with the system's root certificates.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """One EP site: a name for people, its address and optional TLS.

    ``address`` is ``HOST:PORT``, ``dns:///NAME:PORT`` or the ``HOST:PORT``
    of each replica joined by commas, for a site asked over gRPC; or the
    base URL (``http://...`` or ``https://...``) of a site that speaks the
    IVOA note's HTTP interface (see :mod:`ep_server.client.targets`).
    """

    name: str
    address: str
    tls: TLS | None = None

    @property
    def over_http(self) -> bool:
        """True when the site is asked in the note's HTTP interface."""
        return is_url(self.address)


def load_sites(path: str | Path) -> list[Site]:
    """Read and validate a site list file.

    :raises SiteListError: when the file cannot be read, is not TOML, or
        holds invalid entries (all of them named).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteListError(f"cannot read site list {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SiteListError(f"{path}: not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SiteListError(f"{path}: not valid TOML: {exc}") from exc
    return parse_sites(data, source=str(path), base=path.parent)


def parse_sites(
    data: Mapping[str, Any], source: str = "site list", base: Path | None = None
) -> list[Site]:
    """Validate the parsed TOML of a site list (``{"site": [...]}``).

    Relative TLS paths are taken relative to ``base`` when it is given.

    :raises SiteListError: naming every bad entry and key.
    """
    problems = [f"unknown key {key!r} (expected [[site]] entries)" for key in data if key != "site"]
    entries = data.get("site", [])
    if not isinstance(entries, list) or not entries:
        problems.append("needs at least one [[site]] entry")
        entries = []
    sites = [_site(i, entry, base, problems) for i, entry in enumerate(entries, start=1)]
    _check_unique(sites, problems)
    if problems:
        raise SiteListError(
            f"{source}: invalid site list:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return [site for site in sites if site is not None]


def _site(index: int, entry: Any, base: Path | None, problems: list[str]) -> Site | None:
    label = f"site #{index}"
    if not isinstance(entry, Mapping):
        problems.append(f"{label}: must be a table with name and address (or url)")
        return None
    if isinstance(entry.get("name"), str) and entry["name"]:
        label = f"site #{index} ({entry['name']!r})"
    before = len(problems)
    problems.extend(f"{label}: unknown key {key!r}" for key in entry if key not in _SITE_KEYS)
    name = _text(entry, "name", label, problems)
    given = [key for key in _WHERE_KEYS if key in entry]
    if len(given) > 1:
        both = " and ".join(given)
        problems.append(f"{label}: give one of address, addresses and url, not {both}")
        return None
    address = _url(entry, label, problems) if given == ["url"] else _address(entry, label, problems)
    tls = _tls(entry["tls"], label, base, problems) if "tls" in entry else None
    if tls is not None and is_url(address):
        tls = _url_tls(address, tls, label, problems)
    return Site(name, address, tls) if len(problems) == before else None


def _url(entry: Mapping[str, Any], label: str, problems: list[str]) -> str:
    text = _text(entry, "url", label, problems)
    try:
        return parse_url(text) if text else ""
    except ValueError as exc:
        problems.append(f"{label}: url: {exc}")
        return ""


def _url_tls(url: str, tls: TLS, label: str, problems: list[str]) -> TLS | None:
    """A URL site's TLS settings: none for ``http://``, and ``None`` (the
    system's root certificates) for an ``https://`` URL's empty table."""
    if url.startswith("http://"):
        problems.append(f"{label}: tls: an http:// URL is plaintext; use https:// for TLS")
        return None
    return None if tls == TLS() else tls


def _address(entry: Mapping[str, Any], label: str, problems: list[str]) -> str:
    """``address``, or ``addresses`` joined with commas."""
    if "addresses" in entry:
        value = entry["addresses"]
        if not isinstance(value, list) or not value or not all(_nonblank(v) for v in value):
            problems.append(f"{label}: addresses: must be a list of HOST:PORT strings")
            return ""
        bad = [v for v in value if "," in v or v.strip().startswith("dns:")]
        if bad:
            problems.append(f"{label}: addresses: each entry is one HOST:PORT, got {bad[0]!r}")
            return ""
        text, key = ",".join(value), "addresses"
    else:
        text, key = _text(entry, "address", label, problems), "address"
    if not text:
        return ""
    if is_url(text):
        problems.append(f"{label}: {key}: {text!r} is a URL: name it with url = ... instead")
        return ""
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        problems.append(f"{label}: {key}: {exc}")
        return ""


def _nonblank(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _text(entry: Mapping[str, Any], key: str, label: str, problems: list[str]) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{label}: {key}: must be a non-empty string, got {value!r}")
        return ""
    return value


def _tls(value: Any, label: str, base: Path | None, problems: list[str]) -> TLS | None:
    if not isinstance(value, Mapping):
        problems.append(f'{label}: tls: must be a table such as {{ ca = "ca.pem" }}')
        return None
    problems.extend(f"{label}: tls: unknown key {key!r}" for key in value if key not in _TLS_KEYS)
    for key in _TLS_KEYS:
        if key in value and (not isinstance(value[key], str) or not value[key]):
            problems.append(f"{label}: tls.{key}: must be a non-empty string")
    if ("cert" in value) != ("key" in value):
        problems.append(f"{label}: tls: cert and key must be given together")
    paths = {k: _path(value.get(k), base) for k in ("ca", "cert", "key")}
    server_name = value.get("server_name")
    return TLS(**paths, server_name=server_name if isinstance(server_name, str) else None)


def _path(value: Any, base: Path | None) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _check_unique(sites: list[Site | None], problems: list[str]) -> None:
    seen: set[str] = set()
    for site in sites:
        if site is None:
            continue
        if site.name in seen:
            problems.append(f"site {site.name!r}: name is used by more than one entry")
        seen.add(site.name)
