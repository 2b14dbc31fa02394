"""The docker plugin's decision written plainly, step by step: the oracle
that ``test_equivalence.py`` checks ``decide()``, ``parse_reference()``,
``parse_platform()`` and ``read_taskinfo()`` against.

Each step parses, normalises and formats as it goes, with no pattern of the
whole grammar and nothing prepared at start-up; the plugin's modules must
give the same verdicts, reasons, messages and offers for every input.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ep_plugin_docker import reasons as R
from ep_plugin_docker.config import KNOWN_PROTOCOLS, MAX_PORT
from ep_plugin_docker.decide import Site
from ep_server import Offer, Reason, TaskQuery, Verdict
from ep_server.fitting import INSUFFICIENT_CORES, INSUFFICIENT_MEMORY, Limit, LimitLike
from ep_server.model import Cause, IntRange, Resources

ResourceName: TypeAlias = Literal["cores", "memory"]

# --- reference -------------------------------------------------------------

DEFAULT_DOMAIN = "docker.io"
NAME_MAX_LENGTH = 255
#: Longest reference considered at all: a name, a tag and a sha512 digest fit.
REFERENCE_MAX_LENGTH = 1024

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?",
    re.ASCII,
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*", re.ASCII)
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """The string is not a valid image reference; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed image reference. ``domain`` is ``""`` when the reference
    names none (the image is then on :data:`DEFAULT_DOMAIN`)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def registry(self) -> str:
        """The registry the image is pulled from."""
        return self.domain or DEFAULT_DOMAIN

    @property
    def name(self) -> str:
        """The repository name as written: ``[domain/]path``."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_reference(text: str) -> ImageRef:
    """Parse ``text`` as an image reference.

    :raises InvalidReference: naming the part that is wrong.
    """
    if not text:
        raise InvalidReference("must not be empty")
    if len(text) > REFERENCE_MAX_LENGTH:
        raise InvalidReference(f"is {len(text)} characters long; at most {REFERENCE_MAX_LENGTH}")
    rest, at, digest = text.partition("@")
    name, tag = _split_tag(rest)
    domain, path = _split_domain(name)
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidReference(f"repository name is longer than {NAME_MAX_LENGTH} characters")
    _check_tag(tag)
    return ImageRef(domain, path, tag, parse_digest(digest) if at else None)


def parse_digest(text: str) -> str:
    """Check a content digest (``sha256:<64 hex>``) and return it.

    :raises InvalidReference: if it is malformed or its algorithm unknown.
    """
    algorithm, colon, hex_digits = text.partition(":")
    if not colon or not _ALGORITHM.fullmatch(algorithm):
        raise InvalidReference(f"digest {text!r} is not of the form algorithm:hex")
    length = _HEX_LENGTH.get(algorithm)
    if length is None:
        known = ", ".join(_HEX_LENGTH)
        raise InvalidReference(f"digest algorithm {algorithm!r} is not supported (use {known})")
    if len(hex_digits) != length or not re.fullmatch(r"[0-9a-f]+", hex_digits):
        raise InvalidReference(
            f"{algorithm} digest must be {length} lower-case hex digits, got {hex_digits!r}"
        )
    return text


def _split_tag(rest: str) -> tuple[str, str | None]:
    """Split ``name[:tag]``: a tag's colon comes after the last slash."""
    name, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        return rest, None
    return name, tag


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, remainder = name.partition("/")
    if slash and _looks_like_domain(first):
        if not _DOMAIN.fullmatch(first):
            raise InvalidReference(f"registry {first!r} is not a valid host[:port]")
        domain, path = first, remainder
    else:
        domain, path = "", name
    _check_path(path)
    return domain, path


def _looks_like_domain(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or (component.lower() != component)
    )


def _check_path(path: str) -> None:
    if not path:
        raise InvalidReference("repository name must not be empty")
    for component in path.split("/"):
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if component and _PATH_COMPONENT.fullmatch(component.lower()):
            raise InvalidReference(f"repository name must be lower-case, got {component!r}")
        raise InvalidReference(
            f"repository name component {component!r} is invalid: use lower-case letters "
            "and digits, separated by '.', '_', '__' or dashes"
        )


def _check_tag(tag: str | None) -> None:
    if tag is not None and not _TAG.fullmatch(tag):
        raise InvalidReference(
            f"tag {tag!r} is invalid: 1-128 of letters, digits, '_', '.', '-', "
            "not starting with '.' or '-'"
        )


# --- platforms -------------------------------------------------------------

_ARCHITECTURES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "x86": ("386", None),
}
_OPERATING_SYSTEMS = {"win32": "windows", "cygwin": "windows", "macos": "darwin"}
_COMPONENT = re.compile(r"[a-z0-9_-]+", re.ASCII)


class InvalidPlatform(ValueError):
    """The string is not an ``os/architecture[/variant]`` platform."""


@dataclass(frozen=True, slots=True)
class Platform:
    """A normalised platform; ``None`` parts are left open (match anything)."""

    os: str | None = None
    architecture: str | None = None
    variant: str | None = None

    def __str__(self) -> str:
        parts = (self.os or "*", self.architecture or "*", self.variant)
        return "/".join(p for p in parts if p)

    def runs(self, wanted: Platform) -> bool:
        """Whether this (host) platform runs images built for ``wanted``."""
        return (
            _same(self.os, wanted.os)
            and _same(self.architecture, wanted.architecture)
            and _same(self.variant, wanted.variant)
        )


def _same(have: str | None, want: str | None) -> bool:
    return have is None or want is None or have == want


def normalise(
    os: str | None, architecture: str | None = None, variant: str | None = None
) -> Platform:
    """Build a :class:`Platform` from raw names, normalising each."""
    os_name = os.strip().lower() if os else None
    if os_name:
        os_name = _OPERATING_SYSTEMS.get(os_name, os_name)
    arch, arch_variant = _architecture(architecture)
    chosen = variant.strip().lower() if variant else arch_variant
    if arch == "arm64" and chosen == "v8":
        chosen = None  # v8 is arm64's only (and default) variant
    return Platform(os_name or None, arch, chosen)


def _architecture(raw: str | None) -> tuple[str | None, str | None]:
    name = raw.strip().lower() if raw else ""
    if not name:
        return None, None
    return _ARCHITECTURES.get(name, (name, None))


def parse_platform(text: str) -> Platform:
    """Parse ``os/architecture[/variant]`` (or a bare ``os``).

    :raises InvalidPlatform: if it has more parts or odd characters.
    """
    parts = text.strip().lower().split("/")
    if len(parts) > 3 or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise InvalidPlatform(
            f"{text!r} is not a platform of the form os/architecture[/variant], "
            "e.g. linux/amd64 or linux/arm64/v8"
        )
    return normalise(*parts)


def host_platform(os: str, architecture: str) -> Platform:
    """The platform of a host described by ``sys.platform`` and ``platform.machine()``."""
    host_os = "linux" if os.startswith("linux") else os
    return normalise(host_os, architecture)


def check_platforms(
    wanted: Iterable[tuple[str, Platform]], runs: Sequence[Platform]
) -> list[Reason]:
    """A reason for every requested platform (with its field) that none of
    ``runs``, the platforms this host runs, runs."""
    return [
        _unsupported(field, platform, runs)
        for field, platform in wanted
        if not any(have.runs(platform) for have in runs)
    ]


def _unsupported(field: str, wanted: Platform, runs: Sequence[Platform]) -> Reason:
    names = ", ".join(str(p) for p in runs)
    return R.reason(
        R.UNSUPPORTED_PLATFORM, field, f"platform {wanted} asked for; this host runs {names}"
    )


# --- fitting ---------------------------------------------------------------

_CODES: dict[str, str] = {"cores": INSUFFICIENT_CORES, "memory": INSUFFICIENT_MEMORY}
_UNITS: dict[str, str] = {"cores": "", "memory": " bytes"}
_GETS = "a task here gets"


@dataclass(frozen=True, slots=True)
class RangeFit:
    """One resource fitted: the range to offer, and a note on a capped
    maximum or the reason a minimum cannot be met."""

    offered: IntRange
    note: str = ""
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Fit:
    """Both resources fitted: what to offer, the notes on what was capped,
    and the reasons when a minimum cannot be met (then decline)."""

    resources: Resources
    notes: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()

    @property
    def message(self) -> str:
        """The notes as one offer message (``""`` when nothing was capped)."""
        return "; ".join(self.notes)


def fit_range(
    asked: IntRange, limit: LimitLike, name: ResourceName, *, gets: str = _GETS
) -> RangeFit:
    """Fit the range asked for one resource under ``limit`` (see the module's rule)."""
    bound = limit if isinstance(limit, Limit) else Limit(limit)
    if bound.value is None:
        return RangeFit(asked)
    value, unit = bound.value, _UNITS[name]
    if asked.min is not None and asked.min > value:
        return RangeFit(asked, reason=_insufficient(asked.min, bound, name, gets))
    if asked.max is None:
        return RangeFit(IntRange(asked.min, value))
    if asked.max <= value:
        return RangeFit(asked)
    capped = f"{value}{unit} ({bound.source})" if bound.source else f"the limit of {value}{unit}"
    return RangeFit(IntRange(asked.min, value), f"{name} capped at {capped}")


def _insufficient(minimum: int, limit: Limit, name: ResourceName, gets: str) -> Reason:
    unit = _UNITS[name]
    message = f"asked for at least {minimum}{unit} of {name}; {gets} at most {limit.value}{unit}"
    if limit.source:
        message += f" ({limit.source})"
    return Reason(_CODES[name], message, Cause.CAPACITY, False, f"resources.{name}.min")


def fit_resources(
    asked: Resources,
    *,
    cores: LimitLike = None,
    memory: LimitLike = None,
    gets: str = _GETS,
) -> Fit:
    """Fit a request's cores and memory under their limits (``None``: no
    limit); the reasons of both when neither minimum can be met."""
    fitted = (
        fit_range(asked.cores, cores, "cores", gets=gets),
        fit_range(asked.memory, memory, "memory", gets=gets),
    )
    return Fit(
        Resources(fitted[0].offered, fitted[1].offered),
        tuple(f.note for f in fitted if f.note),
        tuple(f.reason for f in fitted if f.reason),
    )


# --- taskinfo --------------------------------------------------------------

ROOT = "taskinfo"


@dataclass(frozen=True, slots=True)
class PortRequest:
    """A port to publish; ``field`` is its path (``taskinfo.ports[0]``)."""

    field: str
    internal: int | None = None
    external: int | None = None
    #: Lower-case, as written; ``None`` when not given (TCP).
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    """What a taskinfo asks for; each part keeps the field path it came from."""

    images: tuple[tuple[str, ImageRef], ...] = ()
    platforms: tuple[tuple[str, Platform], ...] = ()
    privileged: bool = False
    #: The field asking for host networking, or ``""``.
    host_network: str = ""
    ports: tuple[PortRequest, ...] = ()
    #: Fields not read, each as a path with the nearest known field if any
    #: (``taskinfo.privilaged (did you mean privileged?)``).
    ignored: tuple[str, ...] = ()


#: The fields read in each object, by the object's path pattern.
KNOWN_FIELDS = {
    ROOT: ("image", "platform", "privileged", "entrypoint", "environment", "network", "ports"),
    f"{ROOT}.image": ("locations", "digest", "platform"),
    f"{ROOT}.network": ("mode", "ports"),
}


@dataclass
class _Reader:
    """Collects what a taskinfo asks for, and every problem with it."""

    reasons: list[Reason] = field(default_factory=list)
    images: list[tuple[str, ImageRef]] = field(default_factory=list)
    platforms: list[tuple[str, Platform]] = field(default_factory=list)
    ports: list[PortRequest] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def unknown_fields(self, data: Mapping[str, Any], path: str) -> None:
        """Note the keys of ``data`` (at ``path``) that are not read."""
        known = KNOWN_FIELDS[path]
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                self.ignored.append(f"{path}.{key}{hint}")

    def fail(self, code: str, path: str, message: str) -> None:
        self.reasons.append(R.reason(code, path, f"{path}: {message}"))

    def wrong_type(self, path: str, value: Any, expected: str) -> None:
        self.fail(R.INVALID_FIELD, path, f"must be {expected}, not {_kind(value)}")

    def typed(self, data: Mapping[str, Any], key: str, path: str, kind: type) -> Any:
        """``data[key]`` if it has type ``kind``; ``None`` if absent or wrong."""
        value = data.get(key)
        if value is None or _is(value, kind):
            return value
        self.wrong_type(f"{path}.{key}", value, _KIND_NAMES[kind])
        return None


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    list: "a list",
    Mapping: "an object",
}


def _is(value: Any, kind: type) -> bool:
    if kind is list:
        return isinstance(value, Sequence) and not isinstance(value, str)
    return isinstance(value, kind)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    return "a list" if isinstance(value, Sequence) else type(value).__name__


def read_taskinfo(taskinfo: Mapping[str, Any]) -> tuple[ContainerRequest, list[Reason]]:
    """Read ``taskinfo``: what it asks for, and the problems with it."""
    r = _Reader()
    r.unknown_fields(taskinfo, ROOT)
    _read_image(r, taskinfo)
    _read_platform(r, taskinfo.get("platform"), f"{ROOT}.platform")
    privileged = r.typed(taskinfo, "privileged", ROOT, bool) or False
    _read_entrypoint(r, taskinfo)
    _read_environment(r, taskinfo)
    host_network = _read_network(r, taskinfo)
    _read_ports(r, taskinfo.get("ports"), f"{ROOT}.ports")
    request = ContainerRequest(
        tuple(r.images), tuple(r.platforms), privileged, host_network, tuple(r.ports),
        tuple(r.ignored),
    )  # fmt: skip
    return request, r.reasons


# --- image -----------------------------------------------------------------


def _read_image(r: _Reader, taskinfo: Mapping[str, Any]) -> None:
    image, path = taskinfo.get("image"), f"{ROOT}.image"
    if image is None:
        r.fail(R.MISSING_IMAGE, path, "no image given; name one, e.g. docker.io/example:1.0")
    elif isinstance(image, str):
        _read_reference(r, image, path)
    elif isinstance(image, Mapping):
        _read_image_spec(r, image, path)
    else:
        r.wrong_type(path, image, "a string or an object")


def _read_reference(r: _Reader, text: str, path: str) -> ImageRef | None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        r.fail(R.INVALID_IMAGE_REFERENCE, path, f"{text!r} is not a valid image reference: {exc}")
        return None
    r.images.append((path, ref))
    return ref


def _read_image_spec(r: _Reader, spec: Mapping[str, Any], path: str) -> None:
    r.unknown_fields(spec, path)
    digest = _read_digest(r, spec, path)
    locations = r.typed(spec, "locations", path, list)
    for i, item in enumerate(locations or ()):
        _read_location(r, item, f"{path}.locations[{i}]", digest)
    if not locations and "locations" not in _wrong_fields(r, path):
        r.fail(R.MISSING_IMAGE, f"{path}.locations", "no image location given")
    _read_platform(r, spec.get("platform"), f"{path}.platform")


def _wrong_fields(r: _Reader, path: str) -> set[str]:
    """The keys under ``path`` already reported as having the wrong type."""
    prefix = f"{path}."
    return {x.field.removeprefix(prefix) for x in r.reasons if x.field.startswith(prefix)}


def _read_digest(r: _Reader, spec: Mapping[str, Any], path: str) -> str | None:
    digest = r.typed(spec, "digest", path, str)
    if digest is None:
        return None
    try:
        return parse_digest(digest)
    except InvalidReference as exc:
        r.fail(R.INVALID_DIGEST, f"{path}.digest", str(exc))
        return None


def _read_location(r: _Reader, item: Any, path: str, digest: str | None) -> None:
    if not isinstance(item, str):
        r.wrong_type(path, item, "a string")
        return
    ref = _read_reference(r, item, path)
    if ref and digest and ref.digest and ref.digest != digest:
        r.fail(R.DIGEST_MISMATCH, path, f"digest {ref.digest} differs from image.digest {digest}")


# --- platform --------------------------------------------------------------


def _read_platform(r: _Reader, value: Any, path: str) -> None:
    if value is None:
        return
    if isinstance(value, str):
        try:
            r.platforms.append((path, parse_platform(value)))
        except InvalidPlatform as exc:
            r.fail(R.INVALID_PLATFORM, path, str(exc))
    elif isinstance(value, Mapping):
        parts = [r.typed(value, key, path, str) for key in ("os", "architecture", "variant")]
        r.platforms.append((path, normalise(*parts)))
    else:
        r.wrong_type(path, value, "a string (os/architecture) or an object")


# --- entrypoint, environment -------------------------------------------------


def _read_entrypoint(r: _Reader, taskinfo: Mapping[str, Any]) -> None:
    value, path = taskinfo.get("entrypoint"), f"{ROOT}.entrypoint"
    if value is None or isinstance(value, str):
        return
    if not _is(value, list) or not all(isinstance(x, str) for x in value):
        r.wrong_type(path, value, "a string or a list of strings")


def _read_environment(r: _Reader, taskinfo: Mapping[str, Any]) -> None:
    value, path = taskinfo.get("environment"), f"{ROOT}.environment"
    if value is None:
        return
    if isinstance(value, Mapping):
        for name, setting in value.items():
            _read_variable(r, name, setting, f"{path}.{name}")
    elif _is(value, list):
        for i, item in enumerate(value):
            _read_assignment(r, item, f"{path}[{i}]")
    else:
        r.wrong_type(path, value, "an object of name: value strings, or a list of NAME=value")


def _read_variable(r: _Reader, name: str, setting: Any, path: str) -> None:
    if not name or "=" in name:
        r.fail(R.INVALID_FIELD, path, f"{name!r} is not an environment variable name")
    if not isinstance(setting, str):
        r.wrong_type(path, setting, "a string")


def _read_assignment(r: _Reader, item: Any, path: str) -> None:
    if not isinstance(item, str):
        r.wrong_type(path, item, "a string NAME=value")
    elif not item.partition("=")[0]:
        r.fail(R.INVALID_FIELD, path, f"{item!r} is not of the form NAME=value")


# --- network and ports -------------------------------------------------------


def _read_network(r: _Reader, taskinfo: Mapping[str, Any]) -> str:
    """Read ``network``; return the field asking for host networking, or ``""``."""
    value, path = taskinfo.get("network"), f"{ROOT}.network"
    if value is None:
        return ""
    if isinstance(value, str):
        return path if value.lower() == "host" else ""
    if not isinstance(value, Mapping):
        r.wrong_type(path, value, "a string (the network mode) or an object")
        return ""
    r.unknown_fields(value, path)
    _read_ports(r, value.get("ports"), f"{path}.ports")
    mode = r.typed(value, "mode", path, str)
    return f"{path}.mode" if mode and mode.lower() == "host" else ""


#: More ports than any container publishes: refuse rather than check them all.
MAX_PORTS = 1000


def _read_ports(r: _Reader, value: Any, path: str) -> None:
    if value is None:
        return
    if not _is(value, list):
        r.wrong_type(path, value, "a list of ports")
        return
    if len(value) > MAX_PORTS:
        r.fail(R.INVALID_PORT, path, f"{len(value)} ports; a task may publish at most {MAX_PORTS}")
        return
    for i, item in enumerate(value):
        _read_port(r, item, f"{path}[{i}]")


def _read_port(r: _Reader, item: Any, path: str) -> None:
    if not isinstance(item, Mapping):
        r.wrong_type(path, item, "an object such as {internal: {port: 8080}, protocol: TCP}")
        return
    reported = len(r.reasons)  # not _wrong_fields(): that scan made many ports quadratic
    internal = _port_number(r, item.get("internal"), f"{path}.internal")
    external = _port_number(r, item.get("external"), f"{path}.external")
    protocol = r.typed(item, "protocol", path, str)
    if internal is None and external is None and len(r.reasons) == reported:
        r.fail(R.INVALID_PORT, path, "no port given; set internal.port or external.port")
    r.ports.append(PortRequest(path, internal, external, protocol.lower() if protocol else None))


def _port_number(r: _Reader, value: Any, path: str) -> int | None:
    """A port as ``8080``, ``"8080"`` (the draft's OpenAPI writes ports as
    strings) or ``{"port": 8080}``; ``None`` if absent or bad."""
    if isinstance(value, Mapping):
        value, path = value.get("port"), f"{path}.port"
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        r.wrong_type(path, value, "a port number")
        return None
    whole = isinstance(value, int) or value.is_integer()
    if not whole or not 1 <= value <= MAX_PORT:
        r.fail(R.INVALID_PORT, path, f"{value:g} is not a port number (1 to {MAX_PORT})")
        return None
    return int(value)


# --- decide ----------------------------------------------------------------

#: Protocols carried over another: ``http`` and ``https`` are allowed with ``tcp``.
_CARRIED_BY = {"http": "tcp", "https": "tcp"}


def decide(query: TaskQuery, site: Site) -> Verdict:
    """Decide whether this host can run the container ``query`` describes."""
    request, found = read_taskinfo(query.taskinfo)
    found += check_platforms(request.platforms, site.platforms)
    found += check_policy(request, site)
    fit = fit_resources(query.resources, cores=site.cores, memory=site.memory)
    return offers_or_reasons(site, fit, [*found, *fit.reasons], ignored_note(request.ignored))


def ignored_note(ignored: Sequence[str]) -> str:
    """The offer's note on taskinfo fields this plugin does not read."""
    if not ignored:
        return ""
    return f"ignored taskinfo fields this site does not know: {', '.join(ignored)}"


def offers_or_reasons(site: Site, fit: Fit, reasons: Iterable[Reason], note: str = "") -> Verdict:
    """NO with ``reasons`` if there are any, else YES with one offer per
    service, its message the fit's and then ``note``."""
    found = tuple(reasons)
    if found:
        return Verdict.no(*found)
    message = "; ".join(m for m in (fit.message, note) if m)
    return Verdict.yes(
        *(Offer(s.servicetype, s.serviceinfo, fit.resources, message) for s in site.services)
    )


# --- policy ----------------------------------------------------------------


def check_policy(request: ContainerRequest, site: Site) -> list[Reason]:
    """The site's policy on privileges, networking and ports."""
    found = [*_check_privileges(request, site)]
    for port in request.ports:
        found += [*_check_protocol(port, site), *_check_external(port, site)]
    return found


def _check_privileges(request: ContainerRequest, site: Site) -> Iterator[Reason]:
    if request.privileged and not site.allow_privileged:
        yield R.reason(
            R.PRIVILEGED_NOT_ALLOWED,
            "taskinfo.privileged",
            "this site does not run privileged containers",
        )
    if request.host_network and not site.allow_host_network:
        yield R.reason(
            R.HOST_NETWORK_NOT_ALLOWED,
            request.host_network,
            "this site does not give containers the host's network",
        )


def _check_protocol(port: PortRequest, site: Site) -> Iterator[Reason]:
    protocol, path = port.protocol or "tcp", f"{port.field}.protocol"
    if protocol not in KNOWN_PROTOCOLS:
        known = ", ".join(KNOWN_PROTOCOLS)
        yield R.reason(R.INVALID_PROTOCOL, path, f"protocol {protocol!r} is not one of {known}")
    elif not _protocol_allowed(protocol, site):
        allowed = ", ".join(sorted(site.allowed_protocols))
        yield R.reason(
            R.PROTOCOL_NOT_ALLOWED, path, f"protocol {protocol} is not allowed here ({allowed} are)"
        )


def _check_external(port: PortRequest, site: Site) -> Iterator[Reason]:
    if port.external is None or any(port.external in r for r in site.allowed_ports):
        return
    ranges = ", ".join(str(r) for r in site.allowed_ports)
    yield R.reason(
        R.PORT_NOT_ALLOWED,
        f"{port.field}.external",
        f"external port {port.external} is outside the ports allowed here ({ranges})",
    )


def _protocol_allowed(protocol: str, site: Site) -> bool:
    carrier = _CARRIED_BY.get(protocol)
    return protocol in site.allowed_protocols or carrier in site.allowed_protocols
