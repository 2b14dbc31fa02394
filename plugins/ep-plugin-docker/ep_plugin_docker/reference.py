"""OCI image references, as the distribution/reference grammar defines them.

::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path-component ["/" path-component]*
    domain           := host [":" port-number]
    host             := domain-name | "[" IPv6address "]"
    domain-name      := domain-component ["." domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path-component   := alpha-numeric [separator alpha-numeric]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" hex

The name is at most 255 characters. As Docker does, the first component is
the registry domain only when more components follow and it contains a ``.``
or a ``:``, is ``localhost``, or has an upper-case letter; otherwise the
image is on ``docker.io``. Digests are checked as go-digest does for the
algorithms it registers: ``sha256`` (64 lower-case hex digits), ``sha384``
(96) and ``sha512`` (128); other algorithms are refused.

Pure functions, no I/O: :func:`parse_reference` returns an :class:`ImageRef`
or raises :class:`InvalidReference` saying what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_DOMAIN", "ImageRef", "InvalidReference", "parse_digest", "parse_reference"]

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
