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
or raises :class:`InvalidReference` saying what is wrong. A valid reference
is read in one match of a compiled pattern of the whole grammar; only a
text that does not match is taken apart step by step, to say what is wrong.
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
_DOMAIN_TEXT = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT_TEXT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG_TEXT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST_TEXT = r"sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}"
_DOMAIN = re.compile(_DOMAIN_TEXT, re.ASCII)
_PATH_COMPONENT = re.compile(_PATH_COMPONENT_TEXT, re.ASCII)
_TAG = re.compile(_TAG_TEXT, re.ASCII)
_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*", re.ASCII)
_HEX = re.compile(r"[0-9a-f]+", re.ASCII)
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
#: A digest go-digest accepts: a registered algorithm and its hex length.
_DIGEST = re.compile(_DIGEST_TEXT, re.ASCII)
#: A whole valid reference, in one match. The first component is taken as
#: the domain only when it looks like one (a ``.``, a ``:`` or an upper-case
#: letter before the first ``/``, or exactly ``localhost/``); without a
#: domain, a first component that looks like one may not be followed by
#: ``/``. A text this does not match is not a valid reference:
#: :func:`_diagnose` then says why.
_REFERENCE = re.compile(
    rf"""
    (?:(?=[^/]*[.:A-Z]|localhost/)(?P<domain>{_DOMAIN_TEXT})/
      |(?![^/]*[.:A-Z][^/]*/|localhost/))
    (?P<path>{_PATH_COMPONENT_TEXT}(?:/{_PATH_COMPONENT_TEXT})*)
    (?::(?P<tag>{_TAG_TEXT}))?
    (?:@(?P<digest>{_DIGEST_TEXT}))?
    """,
    re.ASCII | re.VERBOSE,
)


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
    length = len(text)
    match = _REFERENCE.fullmatch(text) if length <= REFERENCE_MAX_LENGTH else None
    if match is None or (length > NAME_MAX_LENGTH and match.end("path") > NAME_MAX_LENGTH):
        return _diagnose(text)
    domain, path, tag, digest = match.group("domain", "path", "tag", "digest")
    return ImageRef(domain or "", path, tag, digest)


def parse_digest(text: str) -> str:
    """Check a content digest (``sha256:<64 hex>``) and return it.

    :raises InvalidReference: if it is malformed or its algorithm unknown.
    """
    if _DIGEST.fullmatch(text):
        return text
    algorithm, colon, hex_digits = text.partition(":")
    if not colon or not _ALGORITHM.fullmatch(algorithm):
        raise InvalidReference(f"digest {text!r} is not of the form algorithm:hex")
    length = _HEX_LENGTH.get(algorithm)
    if length is None:
        known = ", ".join(_HEX_LENGTH)
        raise InvalidReference(f"digest algorithm {algorithm!r} is not supported (use {known})")
    if len(hex_digits) != length or not _HEX.fullmatch(hex_digits):
        raise InvalidReference(
            f"{algorithm} digest must be {length} lower-case hex digits, got {hex_digits!r}"
        )
    return text


# --- what is wrong with a reference --------------------------------------------


def _diagnose(text: str) -> ImageRef:
    """Parse ``text`` part by part, checking each in turn, so that the error
    names the first part that is wrong; for texts :data:`_REFERENCE` does
    not match (it matches every valid reference whose name fits)."""
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
