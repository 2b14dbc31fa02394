"""What every RPC goes through around its handler, in one place:

request id -> identity (bearer token, JWT or client certificate; an address
that keeps failing to authenticate is refused for a while) -> rate limit ->
the handler -> errors mapped to ``google.rpc.Status`` -> metrics and
the access log.

It is applied when the method handlers are built (not as a gRPC
interceptor), so it costs no handler lookup per call, and the handler gets
the caller's :class:`~ep_server.model.Identity` as a plain argument.
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
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ep_server.auth import AuthError, authorization_values
from ep_server.errors import (
    ERROR_DOMAIN,
    EPError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)
from ep_server.logs import REQUEST_ID
from ep_server.model import ANONYMOUS, Identity
from ep_server.ratelimit import RateLimiter

__all__ = ["CallPipeline", "Handler", "Method", "status_proto"]

log = logging.getLogger(__name__)
access = logging.getLogger("ep_server.access")

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Awaitable[Any]]
Method = Callable[[Any, Context, Identity], Awaitable[Any]]

REQUEST_ID_KEY = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")


class _Authenticator(Protocol):
    def from_metadata(
        self, metadata: Iterable[tuple[str, str | bytes]], peer_subject: str | None
    ) -> Identity: ...


class _Metrics(Protocol):
    def rpc(self, method: str, code: str, seconds: float) -> None: ...

    def inflight(self) -> AbstractContextManager[None]: ...


@dataclass
class CallPipeline:
    """The per-call policy of one server."""

    #: Resolves credentials to an identity; None skips authentication
    #: (callers are then anonymous, or known by their client certificate).
    authenticator: _Authenticator | None = None
    #: Reads the verified client-certificate subject off a call (mTLS only).
    peer_subject: Callable[[Context], str | None] | None = None
    #: RPC names that may be called without credentials.
    anonymous: Collection[str] = ("Ask", "GetServiceInfo")
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
    _in_flight: int = 0
    #: (address, credentials) that failed lately: repeats are not counted again.
    _failed_credentials: OrderedDict[tuple[str, int], None] = field(
        default_factory=OrderedDict, repr=False
    )

    def wrap(self, name: str, method: Method) -> Handler:
        """The gRPC handler for ``method``, called ``name``."""

        async def handler(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            metadata = context.invocation_metadata() or ()
            request_id = _request_id(metadata)
            token = REQUEST_ID.set(request_id)
            trailer = ((REQUEST_ID_KEY, request_id),)
            code = grpc.StatusCode.OK
            identity = ANONYMOUS
            self._in_flight += 1
            try:
                self._admit(name)
                identity = self._identify(name, context, metadata)
                self._limit(name, identity, context)
                with self.metrics.inflight() if self.metrics else nullcontext():
                    response = await method(request, context, identity)
                context.set_trailing_metadata(trailer)
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client left, or its deadline passed
                raise
            except EPError as exc:
                code = exc.code
                status = rpc_status.to_status(status_proto(exc))
                await context.abort(
                    status.code, status.details, (*status.trailing_metadata, *trailer)
                )
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error in %s", name)
                message = f"internal error; the server log has request id {request_id}"
                await context.abort(code, message, trailer)
            finally:
                self._in_flight -= 1
                self._record(name, code, time.perf_counter() - started, identity)
                REQUEST_ID.reset(token)

        handler.__name__ = name
        return handler

    def _admit(self, name: str) -> None:
        if self.max_concurrent and self._in_flight > self.max_concurrent:
            raise ResourceExhausted(
                f"the server is handling {self.max_concurrent} calls already; retry {name} later",
                0.1,
                reason="TOO_MANY_REQUESTS",
            )

    def _identify(
        self, name: str, context: Context, metadata: Iterable[tuple[str, str | bytes]]
    ) -> Identity:
        peer = self.peer_subject(context) if self.peer_subject else None
        if self.authenticator is not None:
            failures = self.auth_failures
            if failures is not None and len(failures):  # someone failed lately
                self._locked_out(failures, context, metadata)
            try:
                identity = self.authenticator.from_metadata(metadata, peer)
            except AuthError as exc:
                if failures is not None:
                    self._failed(failures, context, metadata)
                raise Unauthenticated(str(exc), reason=exc.reason) from None
        else:
            identity = Identity(peer, "mtls") if peer else ANONYMOUS
        if identity.anonymous and name not in self.anonymous:
            raise Unauthenticated(
                f"{name} needs credentials: a bearer token, a JWT or a client certificate",
                reason="CREDENTIALS_REQUIRED",
            )
        return identity

    def _failed(
        self,
        failures: RateLimiter,
        context: Context,
        metadata: Iterable[tuple[str, str | bytes]],
    ) -> None:
        """Count a failed authentication against the caller's address, once
        per distinct credential: a client that keeps sending the same wrong
        token (one token sent to many sites, some of which do not know it)
        learns nothing new by repeating it and must not lock out its
        neighbours; every new guess counts."""
        host = _peer_host(context.peer())
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
    def _locked_out(
        failures: RateLimiter, context: Context, metadata: Iterable[tuple[str, str | bytes]]
    ) -> None:
        """Refuse, unchecked, a call with credentials from an address that
        has used up its failed authentications; anonymous calls pass."""
        host = _peer_host(context.peer())
        wait = failures.wait(host)
        if wait > 0 and authorization_values(metadata):
            raise ResourceExhausted(
                f"too many failed authentications from {host}; retry in {wait:.2f}s",
                wait,
                reason="AUTH_FAILURES",
            )

    def _limit(self, name: str, identity: Identity, context: Context) -> None:
        if self.limiter is None or name not in self.limited:
            return
        # Subjects of different methods may coincide (a token named "alice", a
        # JWT with sub "alice"): they are different callers.
        if identity.anonymous:
            key = _peer_host(context.peer())
        else:
            key = f"{identity.method}:{identity.subject}"
        wait = self.limiter.take(key)
        if wait > 0:
            raise ResourceExhausted(
                f"too many {name} calls from {key}; retry in {wait:.2f}s",
                wait,
                reason="RATE_LIMITED",
            )

    def _record(self, name: str, code: grpc.StatusCode, seconds: float, who: Identity) -> None:
        if self.metrics is not None:
            self.metrics.rpc(name, code.name, seconds)
        if self.access_log:
            access.info(
                "%s %s %.1fms %s",
                name,
                code.name,
                seconds * 1000,
                who.subject,
                extra={
                    "rpc": name,
                    "code": code.name,
                    "ms": seconds * 1000,
                    "identity": who.subject,
                },
            )


#: Distinct failed credentials remembered (about 100 bytes each).
_FAILED_CREDENTIALS_KEPT = 10_000

# Made-up request ids: a random per-process prefix and a counter. Unique
# across processes and restarts, and far cheaper per call than uuid4().
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SANE_ID.fullmatch(value):
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


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


def status_proto(exc: EPError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for an error: ErrorInfo always, BadRequest
    for invalid arguments, RetryInfo when waiting helps."""
    status = status_pb2.Status(code=exc.code.value[0], message=exc.message)
    details: list[Any] = []
    if isinstance(exc, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    details.append(
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata)
    )
    if isinstance(exc, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status
