"""OCI platforms (``os/architecture[/variant]``), the host's, and the check
that this host runs the platforms a request asks for.

Names are normalised as containerd's ``platforms`` package does, so that
``x86_64`` and ``amd64``, ``aarch64`` and ``arm64`` (whose default variant is
``v8``), or ``armv7l`` and ``arm/v7`` compare equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ep_plugin_docker import reasons as R
from ep_server import Reason

__all__ = [
    "InvalidPlatform",
    "Platform",
    "check_platforms",
    "host_platform",
    "parse_platform",
    "platform_names",
]

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
#: ``os/architecture[/variant]`` (or a bare ``os``), lower case.
_PLATFORM = re.compile(r"([a-z0-9_-]+)(?:/([a-z0-9_-]+)(?:/([a-z0-9_-]+))?)?", re.ASCII)


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
    return _normalised(
        os.strip().lower() if os else None,
        architecture.strip().lower() if architecture else None,
        variant.strip().lower() if variant else None,
    )


def _normalised(os: str | None, architecture: str | None, variant: str | None) -> Platform:
    """A :class:`Platform` from names already stripped and lower-cased."""
    if os:
        os = _OPERATING_SYSTEMS.get(os, os)
    arch: str | None = None
    arch_variant: str | None = None
    if architecture:
        arch, arch_variant = _ARCHITECTURES.get(architecture, (architecture, None))
    chosen = arch_variant if variant is None else variant
    if arch == "arm64" and chosen == "v8":
        chosen = None  # v8 is arm64's only (and default) variant
    return Platform(os or None, arch, chosen)


def parse_platform(text: str) -> Platform:
    """Parse ``os/architecture[/variant]`` (or a bare ``os``).

    :raises InvalidPlatform: if it has more parts or odd characters.
    """
    match = _PLATFORM.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidPlatform(
            f"{text!r} is not a platform of the form os/architecture[/variant], "
            "e.g. linux/amd64 or linux/arm64/v8"
        )
    return _normalised(*match.groups())


def host_platform(os: str, architecture: str) -> Platform:
    """The platform of a host described by ``sys.platform`` and ``platform.machine()``."""
    host_os = "linux" if os.startswith("linux") else os
    return normalise(host_os, architecture)


def check_platforms(
    wanted: Iterable[tuple[str, Platform]], runs: Sequence[Platform], names: str | None = None
) -> list[Reason]:
    """A reason for every requested platform (with its field) that none of
    ``runs``, the platforms this host runs, runs; ``names`` is
    :func:`platform_names` of ``runs``, when the caller has it at hand."""
    found = []
    for field, platform in wanted:
        if not any(have.runs(platform) for have in runs):
            text = platform_names(runs) if names is None else names
            found.append(
                R.reason(
                    R.UNSUPPORTED_PLATFORM,
                    field,
                    f"platform {platform} asked for; this host runs {text}",
                )
            )
    return found


def platform_names(runs: Iterable[Platform]) -> str:
    """The platforms a host runs, as a refusal names them."""
    return ", ".join(str(p) for p in runs)
