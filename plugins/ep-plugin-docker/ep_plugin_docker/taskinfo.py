"""Read a docker-container taskinfo into a :class:`ContainerRequest`.

Two shapes are understood, and may be mixed:

* the IVOA note's seed: ``{"image": "docker.io/example:1.0"}``;
* the IVOA ExecutionBroker's docker-container: ``image`` as an object with
  ``locations`` (references), ``digest`` and ``platform``; ``privileged``,
  ``entrypoint``, ``environment``, and ``network`` with its ``ports``
  (``{"internal": {"port": 8080}, "external": {"port": 8080}, "protocol":
  "TCP"}``).

Beside these, ``platform`` (``"linux/arm64"``), ``ports`` at the top level,
``network: "host"`` and ``network.mode: "host"`` are read. Unknown fields
are not refused, so that a newer client's fields do not turn a YES into a
NO, but they are listed (:attr:`ContainerRequest.ignored`) and the offer
says so: a misspelt ``privilaged: true`` is then seen, not silently run
unprivileged. A field that is read must have the right type, or the reader
gives an ``INVALID_FIELD`` reason naming its path. Every problem is
reported, not only the first.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ep_plugin_docker import reasons as R
from ep_plugin_docker.config import MAX_PORT
from ep_plugin_docker.platforms import InvalidPlatform, Platform, normalise, parse_platform
from ep_plugin_docker.reference import ImageRef, InvalidReference, parse_digest, parse_reference
from ep_server import Reason

__all__ = ["KNOWN_FIELDS", "ContainerRequest", "PortRequest", "read_taskinfo"]

ROOT = "taskinfo"
_IMAGE = f"{ROOT}.image"
_NETWORK = f"{ROOT}.network"


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
    _IMAGE: ("locations", "digest", "platform"),
    _NETWORK: ("mode", "ports"),
}
_KNOWN_SETS = {path: frozenset(names) for path, names in KNOWN_FIELDS.items()}


class _Reader:
    """Collects what a taskinfo asks for, and every problem with it."""

    __slots__ = ("ignored", "images", "platforms", "ports", "reasons")

    def __init__(self) -> None:
        self.reasons: list[Reason] = []
        self.images: list[tuple[str, ImageRef]] = []
        self.platforms: list[tuple[str, Platform]] = []
        self.ports: list[PortRequest] = []
        self.ignored: list[str] = []

    def unknown_fields(self, data: Mapping[str, Any], path: str) -> None:
        """Note the keys of ``data`` (at ``path``) that are not read."""
        if _KNOWN_SETS[path].issuperset(data):
            return
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
        return _is_list(value)
    return isinstance(value, kind)


def _is_list(value: Any) -> bool:
    """A JSON array: a sequence that is not a string (a list, from the wire)."""
    return type(value) is list or (isinstance(value, Sequence) and not isinstance(value, str))


#: Types that are never mappings: a value of one is not an object without
#: asking ``Mapping``'s subclass hook.
_NOT_OBJECTS = (str, list, int, float, type(None))


def _is_object(value: Any) -> bool:
    """A JSON object: a mapping. A dict (from the wire) is one at once; a
    string, list, number or ``None`` is not, at once."""
    if isinstance(value, dict):
        return True
    return not isinstance(value, _NOT_OBJECTS) and isinstance(value, Mapping)


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
    """Read ``taskinfo``: what it asks for, and the problems with it. Each
    field is read in a fixed order, so the reasons come in that order."""
    r = _Reader()
    r.unknown_fields(taskinfo, ROOT)
    _read_image(r, taskinfo)
    get = taskinfo.get
    platform = get("platform")
    if platform is not None:
        _read_platform(r, platform, f"{ROOT}.platform")
    privileged = r.typed(taskinfo, "privileged", ROOT, bool) or False
    if get("entrypoint") is not None:
        _read_entrypoint(r, taskinfo)
    if get("environment") is not None:
        _read_environment(r, taskinfo)
    host_network = _read_network(r, taskinfo) if get("network") is not None else ""
    ports = get("ports")
    if ports is not None:
        _read_ports(r, ports, f"{ROOT}.ports")
    request = ContainerRequest(
        tuple(r.images), tuple(r.platforms), privileged, host_network, tuple(r.ports),
        tuple(r.ignored),
    )  # fmt: skip
    return request, r.reasons


# --- image -----------------------------------------------------------------


def _read_image(r: _Reader, taskinfo: Mapping[str, Any]) -> None:
    image = taskinfo.get("image")
    if image is None:
        r.fail(R.MISSING_IMAGE, _IMAGE, "no image given; name one, e.g. docker.io/example:1.0")
    elif isinstance(image, str):
        _read_reference(r, image, _IMAGE)
    elif _is_object(image):
        _read_image_spec(r, image, _IMAGE)
    else:
        r.wrong_type(_IMAGE, image, "a string or an object")


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
    elif _is_object(value):
        parts = [r.typed(value, key, path, str) for key in ("os", "architecture", "variant")]
        r.platforms.append((path, normalise(*parts)))
    else:
        r.wrong_type(path, value, "a string (os/architecture) or an object")


# --- entrypoint, environment -------------------------------------------------


def _read_entrypoint(r: _Reader, taskinfo: Mapping[str, Any]) -> None:
    value = taskinfo.get("entrypoint")
    if value is None or isinstance(value, str):
        return
    if not _is_list(value) or not all(isinstance(x, str) for x in value):
        r.wrong_type(f"{ROOT}.entrypoint", value, "a string or a list of strings")


def _read_environment(r: _Reader, taskinfo: Mapping[str, Any]) -> None:
    value, path = taskinfo.get("environment"), f"{ROOT}.environment"
    if value is None:
        return
    if _is_object(value):
        for name, setting in value.items():
            _read_variable(r, name, setting, path)
    elif _is_list(value):
        for i, item in enumerate(value):
            _read_assignment(r, item, path, i)
    else:
        r.wrong_type(path, value, "an object of name: value strings, or a list of NAME=value")


def _read_variable(r: _Reader, name: str, setting: Any, environment: str) -> None:
    if not name or "=" in name:
        r.fail(
            R.INVALID_FIELD,
            f"{environment}.{name}",
            f"{name!r} is not an environment variable name",
        )
    if not isinstance(setting, str):
        r.wrong_type(f"{environment}.{name}", setting, "a string")


def _read_assignment(r: _Reader, item: Any, environment: str, i: int) -> None:
    if not isinstance(item, str):
        r.wrong_type(f"{environment}[{i}]", item, "a string NAME=value")
    elif not item.partition("=")[0]:
        r.fail(R.INVALID_FIELD, f"{environment}[{i}]", f"{item!r} is not of the form NAME=value")


# --- network and ports -------------------------------------------------------


def _read_network(r: _Reader, taskinfo: Mapping[str, Any]) -> str:
    """Read ``network``; return the field asking for host networking, or ``""``."""
    value = taskinfo.get("network")
    if value is None:
        return ""
    if isinstance(value, str):
        return _NETWORK if value.lower() == "host" else ""
    if not _is_object(value):
        r.wrong_type(_NETWORK, value, "a string (the network mode) or an object")
        return ""
    r.unknown_fields(value, _NETWORK)
    _read_ports(r, value.get("ports"), f"{_NETWORK}.ports")
    mode = r.typed(value, "mode", _NETWORK, str)
    return f"{_NETWORK}.mode" if mode and mode.lower() == "host" else ""


#: More ports than any container publishes: refuse rather than check them all.
MAX_PORTS = 1000


def _read_ports(r: _Reader, value: Any, path: str) -> None:
    if value is None:
        return
    if not _is_list(value):
        r.wrong_type(path, value, "a list of ports")
        return
    if len(value) > MAX_PORTS:
        r.fail(R.INVALID_PORT, path, f"{len(value)} ports; a task may publish at most {MAX_PORTS}")
        return
    for i, item in enumerate(value):
        _read_port(r, item, f"{path}[{i}]")


def _read_port(r: _Reader, item: Any, path: str) -> None:
    if not _is_object(item):
        r.wrong_type(path, item, "an object such as {internal: {port: 8080}, protocol: TCP}")
        return
    reported = len(r.reasons)  # not _wrong_fields(): that scan made many ports quadratic
    internal = _port_number(r, item.get("internal"), path, "internal")
    external = _port_number(r, item.get("external"), path, "external")
    protocol = r.typed(item, "protocol", path, str)
    if internal is None and external is None and len(r.reasons) == reported:
        r.fail(R.INVALID_PORT, path, "no port given; set internal.port or external.port")
    r.ports.append(PortRequest(path, internal, external, protocol.lower() if protocol else None))


def _port_number(r: _Reader, value: Any, port: str, end: str) -> int | None:
    """A port as ``8080``, ``"8080"`` (the draft's OpenAPI writes ports as
    strings) or ``{"port": 8080}``, at ``<port>.<end>``; ``None`` if absent
    or bad."""
    nested = _is_object(value)
    if nested:
        value = value.get("port")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        r.wrong_type(_port_path(port, end, nested), value, "a port number")
        return None
    whole = isinstance(value, int) or value.is_integer()
    if not whole or not 1 <= value <= MAX_PORT:
        message = f"{value:g} is not a port number (1 to {MAX_PORT})"
        r.fail(R.INVALID_PORT, _port_path(port, end, nested), message)
        return None
    return int(value)


def _port_path(port: str, end: str, nested: bool) -> str:
    return f"{port}.{end}.port" if nested else f"{port}.{end}"
