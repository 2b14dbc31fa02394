"""What every RPC goes through around its handler, whatever the transport:

request id -> admission (concurrency limit) -> identity (bearer token, JWT
or client certificate; an address that keeps failing to authenticate is
refused for a while) -> rate limit -> the handler -> metrics and the access
log.

The metadata is read once, for the request id and for whether the call
carries an ``authorization`` entry (any letter case). A call without one
is not shown to the authenticator: it is known by its verified client
certificate's subject, else anonymous, as the authenticator would have
said (:meth:`ep_server.auth.Authenticator.from_metadata`); a call with one
is always checked, and counts towards its address's lockout.

The pipeline knows nothing of gRPC: a transport hands it the call as an
:class:`Inbound` (its metadata, peer, verified client-certificate subject
and deadline) and gets back the handler's response, or an
:class:`~ep_server.errors.EPError` to send as a status (anything unexpected
becomes an INTERNAL one, logged with the request id). The handler receives
the caller's identity as a plain :class:`Call`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import re
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol, TypeVar

from ep_server.auth import AuthError, authorization_values
from ep_server.config import RPC_NAMES
from ep_server.errors import EPError, ResourceExhausted, Unauthenticated
from ep_server.logs import REQUEST_ID
from ep_server.model import ANONYMOUS, Identity
from ep_server.ratelimit import RateLimiter

__all__ = ["REQUEST_ID_KEY", "Call", "CallPipeline", "Inbound", "request_id_of"]

log = logging.getLogger(__name__)
access = logging.getLogger("ep_server.access")

R = TypeVar("R")
Q = TypeVar("Q")
Metadata = Sequence[tuple[str, str | bytes]]

#: The metadata key (a gRPC trailer, an HTTP header) of the request id.
REQUEST_ID_KEY = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")


class Inbound(Protocol):
    """One incoming call, as its transport presents it."""

    #: The id the pipeline gave the call; the transport sends it back.
    request_id: str
    #: "grpc" or "http", for the access log.
    transport: str

    @property
    def metadata(self) -> Metadata:
        """The call's metadata (gRPC metadata, HTTP headers), keys lower case."""

    def peer(self) -> str:
        """The client's address, as gRPC writes it (``ipv4:127.0.0.1:5555``)."""

    def peer_subject(self) -> str | None:
        """The subject of the client certificate the transport verified."""

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline, or None without one."""


@dataclass(slots=True)
class Call:
    """What a handler knows of its call: who is calling, and until when.

    Made once per call and not changed after (not frozen: a frozen
    dataclass's ``__init__`` costs about twice as much).
    """

    identity: Identity
    inbound: Inbound

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline, or None without one."""
        return self.inbound.time_remaining()


class _Authenticator(Protocol):
    """Resolves credentials; for metadata without an ``authorization``
    entry it must answer ``Identity(peer_subject, "mtls")`` when
    ``peer_subject`` is not empty, else ANONYMOUS (the pipeline answers so
    itself, without calling it)."""

    def from_metadata(
        self, metadata: Iterable[tuple[str, str | bytes]], peer_subject: str | None
    ) -> Identity: ...


class _Metrics(Protocol):
    def rpc(self, method: str, code: str, seconds: float) -> None: ...

    def count_in_flight(self, source: Callable[[], int]) -> None: ...


@dataclass
class CallPipeline:
    """The per-call policy of one server."""

    #: Resolves credentials to an identity; None skips authentication
    #: (callers are then anonymous, or known by their client certificate).
    authenticator: _Authenticator | None = None
    #: Whether the transport verifies client certificates (mTLS): only then
    #: is a call's peer subject read.
    mtls: bool = False
    #: RPC names that may be called without credentials.
    anonymous: Collection[str] = RPC_NAMES
    #: Per-identity limit on the RPCs named in ``limited``.
    limiter: RateLimiter | None = None
    limited: Collection[str] = ("Ask",)
    #: Failed authentications per client address; past its burst, calls from
    #: that address with credentials are refused unchecked (slows guessing).
    auth_failures: RateLimiter | None = None
    metrics: _Metrics | None = None
    access_log: bool = False
    #: Most RPCs handled at once (0: no limit); more get RESOURCE_EXHAUSTED.
    #: Counted here rather than by gRPC's ``maximum_concurrent_rpcs``: that
    #: measured about 12 µs of server CPU per call, this a counter, and our
    #: refusal carries ErrorInfo and RetryInfo.
    max_concurrent: int = 0
    #: Calls inside run() now (in_flight()).
    _in_flight: int = 0
    #: (address, credentials) that failed lately: repeats are not counted again.
    _failed_credentials: OrderedDict[tuple[str, int], None] = field(
        default_factory=OrderedDict, repr=False
    )

    def __post_init__(self) -> None:
        if self.metrics is not None:
            self.metrics.count_in_flight(self.in_flight)

    def in_flight(self) -> int:
        """The calls inside :meth:`run` now: from when it takes a call,
        admitted or not, until its handler returns or raises."""
        return self._in_flight

    async def run(
        self,
        name: str,
        inbound: Inbound,
        handler: Callable[[Q, Call], Awaitable[R]],
        request: Q,
    ) -> R:
        """Call ``handler(request, call)`` for the RPC ``name`` under this
        policy. Sets ``inbound.request_id`` first.

        :raises EPError: the status to send (an unexpected exception is
            logged and becomes an INTERNAL one).
        """
        started = _clock()
        metadata = inbound.metadata
        request_id, credentials = _scan(metadata)
        inbound.request_id = request_id
        token = _set_request_id(request_id)
        code = "OK"
        identity = ANONYMOUS
        self._in_flight += 1
        try:
            if self.max_concurrent and self._in_flight > self.max_concurrent:
                self._refuse(name)
            if credentials and (authenticator := self.authenticator) is not None:
                identity = self._authenticate(authenticator, inbound, metadata)
            elif self.mtls and (subject := inbound.peer_subject()):
                identity = Identity(subject, "mtls")
            # else ANONYMOUS, what the authenticator says of a call without credentials
            if identity.anonymous and name not in self.anonymous:
                self._credentials_required(name)
            if self.limiter is not None:
                self._limit(name, identity, inbound)
            return await handler(request, Call(identity, inbound))
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client left, or its deadline passed
            raise
        except EPError as exc:
            code = exc.code.name
            raise
        except Exception as exc:
            code = "INTERNAL"
            log.exception("unexpected error in %s", name)
            message = f"internal error; the server log has request id {request_id}"
            raise EPError(message) from exc
        finally:
            self._in_flight -= 1
            seconds = _clock() - started
            if self.metrics is not None:
                self.metrics.rpc(name, code, seconds)
            if self.access_log:
                _access(name, code, seconds, identity, inbound)
            _reset_request_id(token)

    def _refuse(self, name: str) -> NoReturn:
        raise ResourceExhausted(
            f"the server is handling {self.max_concurrent} calls already; retry {name} later",
            0.1,
            reason="TOO_MANY_REQUESTS",
        )

    def _authenticate(
        self, authenticator: _Authenticator, inbound: Inbound, metadata: Metadata
    ) -> Identity:
        """The identity of a call whose metadata has an ``authorization``
        entry, from the authenticator; refused unchecked while its address
        is locked out."""
        failures = self.auth_failures
        if failures is not None and len(failures):  # someone failed lately
            self._locked_out(failures, inbound)
        peer = inbound.peer_subject() if self.mtls else None
        try:
            return authenticator.from_metadata(metadata, peer)
        except AuthError as exc:
            if failures is not None:
                self._failed(failures, inbound, metadata)
            raise Unauthenticated(str(exc), reason=exc.reason) from None

    @staticmethod
    def _credentials_required(name: str) -> NoReturn:
        raise Unauthenticated(
            f"{name} needs credentials: a bearer token, a JWT or a client certificate",
            reason="CREDENTIALS_REQUIRED",
        )

    def _failed(self, failures: RateLimiter, inbound: Inbound, metadata: Metadata) -> None:
        """Count a failed authentication against the caller's address, once
        per distinct credential: a client that keeps sending the same wrong
        token (one token sent to many sites, some of which do not know it)
        learns nothing new by repeating it and must not lock out its
        neighbours; every new guess counts."""
        host = _peer_host(inbound.peer())
        sent = tuple(authorization_values(metadata))
        seen = self._failed_credentials
        key = (host, hash(sent))  # hash(): per-process salted, kept small
        if key in seen:
            seen.move_to_end(key)
            return
        seen[key] = None
        if len(seen) > _FAILED_CREDENTIALS_KEPT:
            seen.popitem(last=False)
        failures.take(host)

    @staticmethod
    def _locked_out(failures: RateLimiter, inbound: Inbound) -> None:
        """Refuse, unchecked, a call with credentials from an address that
        has used up its failed authentications (anonymous calls do not
        come here)."""
        host = _peer_host(inbound.peer())
        wait = failures.wait(host)
        if wait > 0:
            raise ResourceExhausted(
                f"too many failed authentications from {host}; retry in {wait:.2f}s",
                wait,
                reason="AUTH_FAILURES",
            )

    def _limit(self, name: str, identity: Identity, inbound: Inbound) -> None:
        if self.limiter is None or name not in self.limited:
            return
        # Subjects of different methods may coincide (a token named "alice", a
        # JWT with sub "alice"): they are different callers.
        if identity.anonymous:
            key = _peer_host(inbound.peer())
        else:
            key = f"{identity.method}:{identity.subject}"
        wait = self.limiter.take(key)
        if wait > 0:
            raise ResourceExhausted(
                f"too many {name} calls from {key}; retry in {wait:.2f}s",
                wait,
                reason="RATE_LIMITED",
            )


#: Distinct failed credentials remembered (about 100 bytes each).
_FAILED_CREDENTIALS_KEPT = 10_000

# Made-up request ids: 32 hex digits, a random per-process prefix (16 digits,
# the first never 0) and a counter (16 digits). Unique across processes and
# restarts, and far cheaper per call than uuid4(): one hex() of the prefix
# plus the counter.
_ID_COUNTER = itertools.count((uuid.uuid4().int >> 64 | 1 << 63) << 64 | 1)


_clock = time.perf_counter
_set_request_id = REQUEST_ID.set
_reset_request_id = REQUEST_ID.reset
_sane_id = _SANE_ID.fullmatch
_AUTHORIZATION = "authorization"
_AUTHORIZATION_LENGTH = len(_AUTHORIZATION)


def request_id_of(metadata: Metadata) -> str:
    """The caller's ``x-request-id`` when it is sane, else a new id."""
    return _scan(metadata)[0]


def _scan(metadata: Metadata) -> tuple[str, bool]:
    """The request id (the caller's ``x-request-id`` when it is sane, else
    a new one) and whether the metadata has an ``authorization`` entry, any
    letter case (:func:`ep_server.auth.authorization_values`), in one pass."""
    request_id = None
    credentials = False
    for key, value in metadata:
        if key == REQUEST_ID_KEY:
            if request_id is None and isinstance(value, str) and _sane_id(value):
                request_id = value
        # str.lower() never shortens a string, and no shorter one lowers
        # to "authorization", so other lengths need no lower().
        elif len(key) == _AUTHORIZATION_LENGTH and key.lower() == _AUTHORIZATION:
            credentials = True
    if request_id is None:
        request_id = hex(next(_ID_COUNTER))[2:]
    return request_id, credentials


def _access(name: str, code: str, seconds: float, who: Identity, inbound: Inbound) -> None:
    access.info(
        "%s %s %.1fms %s",
        name,
        code,
        seconds * 1000,
        who.subject,
        extra={
            "rpc": name,
            "code": code,
            "ms": seconds * 1000,
            "identity": who.subject,
            "transport": inbound.transport,
        },
    )


def _peer_host(peer: str) -> str:
    """Whom a limit counts, from gRPC's peer string: the client's host, not
    its connection (``ipv4:127.0.0.1:5555`` -> ``ipv4:127.0.0.1``); for IPv6
    its /64 network (``ipv6:[2001:db8::1]:5555`` -> ``ipv6:2001:db8::/64``),
    since one host or site typically holds a whole /64 and could otherwise
    take a fresh address, and a fresh bucket, for every call."""
    host = urllib.parse.unquote(peer).rpartition(":")[0] or peer  # gRPC sends %5B...%5D
    if host.startswith("ipv6:["):
        try:
            address = ipaddress.IPv6Address(host[6:].rstrip("]").partition("%")[0])
        except ValueError:
            return host
        if address.ipv4_mapped is not None:
            return f"ipv4:{address.ipv4_mapped}"
        return f"ipv6:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return host
