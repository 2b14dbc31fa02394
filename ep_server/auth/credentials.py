"""A call's credentials: its ``authorization`` metadata and the bearer token in it.

A call carries at most one ``authorization`` header (name and scheme in any
case), ``Bearer <token>``, where the token is visible ASCII without spaces and
at most :data:`MAX_TOKEN_LENGTH` characters long. Anything else is refused as
``MALFORMED_AUTHORIZATION`` before any token is looked up.

:class:`AuthError`, the refusal of a caller's credentials, lives here too:
every way of knowing the caller raises it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import grpc

__all__ = ["MAX_TOKEN_LENGTH", "AuthError", "authorization_values", "bearer_token"]

#: Longer tokens are refused before any work is done on them (gRPC's own
#: metadata limit is about this size anyway).
MAX_TOKEN_LENGTH = 16 * 1024

#: Visible ASCII, no spaces: what a bearer token may consist of.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


class AuthError(Exception):
    """The caller's credentials are refused.

    ``message`` is safe to send back to the caller: it never contains the
    token (nor any claim value). ``reason`` is the ``ErrorInfo`` reason, one of
    ``MALFORMED_AUTHORIZATION``, ``TOKEN_UNKNOWN``, ``TOKEN_INVALID``,
    ``TOKEN_EXPIRED``, ``TOKEN_NOT_YET_VALID``, ``WRONG_ISSUER`` and
    ``WRONG_AUDIENCE``.
    """

    #: The status the server should answer with.
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _malformed(message: str) -> AuthError:
    return AuthError("MALFORMED_AUTHORIZATION", message)


def authorization_values(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> list[str | bytes]:
    """The credentials a call carries: its ``authorization`` values (any case)."""
    return [value for key, value in metadata or () if key.lower() == "authorization"]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token in a call's metadata; None when it carries no credentials.

    :param metadata: the call's invocation metadata (None is taken as none).
    :raises AuthError: ``MALFORMED_AUTHORIZATION``, for more than one
        ``authorization`` header or one that is not a well-formed bearer token.
    """
    values = authorization_values(metadata)
    if len(values) > 1:
        raise _malformed("more than one authorization header")
    return _token_of(values[0]) if values else None


def _token_of(value: str | bytes) -> str:
    """The token of an ``authorization`` header value, or AuthError."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("the authorization header is not ASCII") from None
    scheme, _, token = value.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        raise _malformed("the authorization header must use the Bearer scheme")
    token = token.strip(" ")
    if not token:
        raise _malformed("the bearer token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed("the bearer token is too long")
    if not _TOKEN_CHARS.fullmatch(token):
        raise _malformed("the bearer token contains characters a token cannot have")
    return token
