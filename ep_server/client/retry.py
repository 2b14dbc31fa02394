"""Deadlines, the retry policy, and turning a gRPC error into a :class:`Failure`.

Only UNAVAILABLE is retried (the call never reached a server, or the server
was not ready), never a TLS handshake failure, which the next attempt would
repeat. Backoff grows exponentially with random jitter, and no attempt is
started that the overall deadline could not wait for.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from ep_server.client.results import Failure, FailureKind
from ep_server.client.sites import TLS

__all__ = [
    "MAX_DEADLINE",
    "Deadline",
    "RetryPolicy",
    "closed_hint",
    "failure_from_error",
    "is_retryable",
]

#: The longest deadline taken (about three years); gRPC fails calls at once
#: with deadlines from about 1e10 seconds on.
MAX_DEADLINE = 1e8

# Words in an UNAVAILABLE status that mean the TLS handshake failed.
_TLS_MARKERS = ("ssl", "tls", "tsi_", "handshake", "certificate", "hostname verification")
# What gRPC says when the server closes the connection it accepted.
_CLOSED = "socket closed"
# ... and, before it, when that happened while connecting (not mid-call).
_CONNECTING = "failed to connect"


def closed_hint(tls: TLS | None) -> str:
    """What a server that closes a TLS connection before answering may
    mean: it wants a client certificate, or does not trust the one sent."""
    if tls is not None and tls.cert is None:
        return (
            "the server (or something in front of it) closed the connection during the TLS "
            "handshake: it may require a client certificate (--cert and --key, or cert and "
            "key in the site list)"
        )
    return (
        "the server (or something in front of it) closed the connection during the TLS "
        "handshake: it may not trust the client certificate sent (issued by a CA it does "
        "not know, or expired)"
    )


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point in time on the monotonic clock, after which we stop waiting."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now.

        :raises ValueError: for NaN, infinity or more than
            :data:`MAX_DEADLINE` seconds, which gRPC would take as already
            passed (every call would fail at once).
        """
        if not math.isfinite(seconds) or seconds > MAX_DEADLINE:
            raise ValueError(
                f"a deadline must be a finite number of seconds up to {MAX_DEADLINE:g}, "
                f"not {seconds!r}"
            )
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How UNAVAILABLE calls are retried.

    The n-th retry waits ``min(max_backoff, initial_backoff * multiplier**n)``
    seconds, scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
    ``max_attempts`` counts the first call; 1 disables retries.
    """

    max_attempts: int = 4
    # The waits between attempts (0.15, 0.3, 0.6 s, about 1 s in all) end
    # early when the channel connects (see Client._with_retries); gRPC's own
    # reconnect waits (channels.RECONNECT_OPTIONS: 0.1 s, x1.6) are shorter,
    # so it tries the address several times within them.
    initial_backoff: float = 0.15
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits before each retry, ``max_attempts - 1`` of them."""
        rng = rng or random.Random()
        for n in range(self.max_attempts - 1):
            base = min(self.max_backoff, self.initial_backoff * self.multiplier**n)
            yield base * rng.uniform(1 - self.jitter, 1 + self.jitter)


NO_RETRY = RetryPolicy(max_attempts=1)


def _is_tls(error: grpc.aio.AioRpcError, tls: TLS | None) -> bool:
    details = (error.details() or "").lower()
    if error.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    closed_connecting = _CLOSED in details and _CONNECTING in details
    return any(m in details for m in _TLS_MARKERS) or (tls is not None and closed_connecting)


def is_retryable(error: grpc.aio.AioRpcError, tls: TLS | None = None) -> bool:
    """True for UNAVAILABLE, unless it is a TLS handshake failure.

    :param tls: the channel's TLS settings, None for plaintext. On a TLS
        channel a connection the server closes while it is being made
        ("failed to connect ... Socket closed") is a TLS failure too: it is
        how a server that wants a client certificate, or does not trust the
        one sent, ends the handshake. Closed mid-call, it is retried.
    """
    return error.code() is grpc.StatusCode.UNAVAILABLE and not _is_tls(error, tls)


def failure_from_error(
    error: grpc.aio.AioRpcError, attempts: int, tls: TLS | None = None
) -> Failure:
    """Classify a failed call (``tls`` as for :func:`is_retryable`)."""
    code = error.code()
    message = error.details() or code.name
    if _is_tls(error, tls):
        kind = FailureKind.TLS
        if _CLOSED in message.lower():
            message = f"{closed_hint(tls)}; gRPC said: {message}"
    elif code is grpc.StatusCode.UNAVAILABLE and _CLOSED in message.lower():
        kind = FailureKind.UNREACHABLE
        message += "; a server that speaks TLS closes plaintext connections so: try --tls or --ca"
    elif code is grpc.StatusCode.UNAVAILABLE:
        kind = FailureKind.UNREACHABLE
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        kind = FailureKind.DEADLINE_EXCEEDED
    else:
        kind = FailureKind.REFUSED
    return Failure(kind, message, code, attempts)
