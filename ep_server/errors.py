"""Errors are data: each carries the gRPC status it maps to.

::

    Exception
     +-- EPError                 an RPC fails; mapped to a google.rpc.Status
     |    +-- InvalidArgument    INVALID_ARGUMENT + BadRequest naming every bad field
     |    +-- Unauthenticated    UNAUTHENTICATED: no, or bad, credentials
     |    +-- ResourceExhausted  RESOURCE_EXHAUSTED + RetryInfo: over a rate limit
     |    +-- Unavailable        UNAVAILABLE + RetryInfo: a store cannot be reached now
     |    |    +-- LedgerUnavailable                       (ep_server.schedule.ledger)
     |    +-- NotFound           NOT_FOUND: no such offer or booking (for this caller)
     |    |    +-- OfferNotFound, BookingNotFound          (ep_server.schedule.ledger)
     |    +-- FailedPrecondition FAILED_PRECONDITION: not in a state to do this
     |    |    +-- OfferExpired, TooManyOffers             (ep_server.schedule.ledger)
     +-- StartupError            the server cannot start (bad config, bad plugin config)
          +-- ConfigError        the EP's own config file or environment is invalid
          +-- PluginConfigError  a plugin's section of the config is invalid

Each class carries its status code, and its ``ErrorInfo`` reason as a class
attribute (an instance may name a more specific one), so mapping an error to
a status is a lookup, never an if-chain. The module knows gRPC's status codes
but nothing of calls or contexts: the edge turns an :class:`EPError` into a
``google.rpc.Status`` (:func:`ep_server.wire.status_proto`).

A well-formed ``Ask`` that reaches the planner never fails for a plugin:
"no" is an answer, and plugin failures become reasons in it (the call can
still be refused before it, by authentication or a rate limit, and an
``Ask`` with a schedule fails UNAVAILABLE while the ledger is unreachable).
Another caller's offers and bookings are NOT_FOUND, not PERMISSION_DENIED, so that
nobody learns what others hold; a site policy refusal is a NO with a POLICY
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

__all__ = [
    "ERROR_DOMAIN",
    "ConfigError",
    "EPError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PluginConfigError",
    "ResourceExhausted",
    "StartupError",
    "Unauthenticated",
    "Unavailable",
]

#: ``google.rpc.ErrorInfo.domain`` of every error this service raises.
ERROR_DOMAIN = "ivoa.ep.v1.ExecutionPlannerService"


class EPError(Exception):
    """An RPC error, with its status code and ``ErrorInfo`` reason.

    :param message: what went wrong, safe to send to the caller.
    :param reason: the ``ErrorInfo`` reason, when more specific than the
        class's own.
    :param metadata: the ``ErrorInfo`` metadata (string values).
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata or {}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: its path (``"resources.cores.min"``) and why."""

    field: str
    description: str


#: An error's details travel in trailing metadata, which gRPC clients cap
#: (8 KiB soft, 16 KiB hard): a request with thousands of bad fields must
#: still get its INVALID_ARGUMENT, so only the first few are detailed.
MAX_VIOLATIONS = 10
_MAX_FIELD = 120
_MAX_DESCRIPTION = 200


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidArgument(EPError):
    """The request is malformed; ``violations`` names the bad fields: every
    one, up to :data:`MAX_VIOLATIONS` (then a last one says how many more)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, what: str, violations: list[FieldViolation]) -> None:
        shown = [
            FieldViolation(_cut(v.field, _MAX_FIELD), _cut(v.description, _MAX_DESCRIPTION))
            for v in violations[:MAX_VIOLATIONS]
        ]
        if len(violations) > MAX_VIOLATIONS:
            shown.append(FieldViolation("", f"and {len(violations) - MAX_VIOLATIONS} more"))
        # The message repeats the first few; BadRequest has them all.
        fields = _cut("; ".join(f"{v.field or what}: {v.description}" for v in shown), 600)
        super().__init__(
            f"invalid {what}: {fields}",
            metadata={"fields": _cut(",".join(sorted({v.field for v in shown if v.field})), 1000)},
        )
        self.violations = shown


class Unauthenticated(EPError):
    """The RPC needs credentials, or those given are not valid."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class ResourceExhausted(EPError):
    """A limit is exceeded; ``retry_after`` says when asking again can work."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after: float, *, reason: str | None = None) -> None:
        super().__init__(
            message, reason=reason, metadata={"retry_after_seconds": f"{retry_after:.3f}"}
        )
        self.retry_after = retry_after


class Unavailable(EPError):
    """Something the answer needs cannot be reached now (the booking
    ledger's database); asking again after ``retry_after`` seconds can work.
    The message is safe to send: where the thing lives is not in it."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"

    def __init__(self, message: str, retry_after: float, *, reason: str | None = None) -> None:
        super().__init__(
            message, reason=reason, metadata={"retry_after_seconds": f"{retry_after:.3f}"}
        )
        self.retry_after = retry_after


class NotFound(EPError):
    """No such offer or booking, as far as this caller may know."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(EPError):
    """The thing exists but is not in a state to do this (an expired offer)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class StartupError(Exception):
    """The server cannot start; the message says what to fix."""


class ConfigError(StartupError):
    """The EP config file or an ``EP_*`` environment variable is invalid."""

    #: When the core settings are invalid: settings holding only the plugin
    #: sections, so that those can be checked too, or None.
    partial: Any = None


class PluginConfigError(StartupError):
    """A plugin's configuration is invalid.

    Raise it from ``ep_configure``; ``key`` is the offending key within the
    plugin's section (dotted for nested keys), so the operator's message reads
    ``plugin.<name>.<key>: <message>``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
