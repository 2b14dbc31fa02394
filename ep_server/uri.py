"""Task-type and service-type URIs: absolute URIs as RFC 3986 defines them."""

from __future__ import annotations

import re

__all__ = ["MAX_URI_LENGTH", "uri_problem"]

MAX_URI_LENGTH = 2048

# scheme ":" then one or more RFC 3986 characters (unreserved, reserved, or a
# well-formed %XX escape). Spaces, control characters and raw non-ASCII are
# not URI characters; a client percent-encodes them.
_ABSOLUTE_URI = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+"
)


def uri_problem(value: str) -> str | None:
    """Say what is wrong with ``value`` as a task or service type, or ``None``."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_URI_LENGTH:
        return f"must be at most {MAX_URI_LENGTH} characters, not {len(value)}"
    if not _ABSOLUTE_URI.fullmatch(value):
        return "must be an absolute URI (scheme:rest, e.g. uri://docker-container)"
    return None
