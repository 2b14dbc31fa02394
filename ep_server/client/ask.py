"""Ask one EP, or many at once under one overall deadline.

::

    async with Client(metadata=[("authorization", "Bearer ...")]) as client:
        query = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})
        async for result in client.ask_many(sites, query, deadline=5.0):
            print(result.site.name, result.answer or result.failure)

Every site asked ends in exactly one :class:`Result`: an answer, or a
failure value. Nothing a single endpoint does (refusing connections, hanging,
failing TLS, answering with an error status or with something that is not an
answer) raises out of the fan-out or keeps the other answers from arriving
before the deadline.

A site whose address is a URL speaks the IVOA note's HTTP interface, and is
asked with ``POST {url}accept`` (:mod:`ep_server.client.http_sites`); the
others are asked over gRPC. Either way the result is the same kind of value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from ep_server.client.channels import ChannelPool, CredentialsError
from ep_server.client.convert import (
    answer_from_proto,
    booking_from_proto,
    request_from_query,
    request_json,
    service_info_from_proto,
)
from ep_server.client.results import Answer, Failure, FailureKind, Result, ServiceInfo
from ep_server.client.retry import Deadline, RetryPolicy, failure_from_error, is_retryable
from ep_server.client.sites import TLS, Site
from ep_server.client.targets import TargetError
from ep_server.model import Booking, TaskQuery
from ep_server.pb import execution_planner_pb2 as pb

if TYPE_CHECKING:
    from ep_server.client.http_sites import HttpSites

__all__ = ["Client", "Metadata", "Query"]

R = TypeVar("R")
Metadata = Sequence[tuple[str, str | bytes]]
Query = TaskQuery | pb.AskRequest
Call = grpc.aio.UnaryUnaryMultiCallable[bytes, R]

_SERVICE = "/ivoa.ep.v1.ExecutionPlannerService/"
_ONLY_ASKED = (
    "{} speaks the IVOA note's HTTP interface, which answers an ask only "
    "(info, offers and bookings are asked over gRPC)"
)
# Past the deadline, how long gRPC gets to report DEADLINE_EXCEEDED itself
# before the client gives up on the call on its own.
_GUARD = 0.25


def _converted(reply: Any, convert: Callable[[Any], R]) -> R | Failure:
    """Convert a decoded reply; one the client cannot read (a value from a
    newer protocol, an out-of-range time) is that site's failure, never an
    exception that loses the other sites' answers."""
    if isinstance(reply, Failure):
        return reply
    try:
        return convert(reply)
    except Exception as exc:
        return Failure(FailureKind.CLIENT_ERROR, f"unreadable reply: {type(exc).__name__}: {exc}")


def _deadline(value: float | Deadline) -> Deadline:
    return value if isinstance(value, Deadline) else Deadline.after(value)


class _Question:
    """A query as each kind of site is sent it: the ``AskRequest``'s bytes
    over gRPC, the note's JSON body over HTTP.

    :raises ValueError, TypeError: when the query cannot be encoded.
    """

    __slots__ = ("body", "payload")

    def __init__(self, query: Query) -> None:
        request = query if isinstance(query, pb.AskRequest) else request_from_query(query)
        self.payload = request.SerializeToString()
        self.body = json.dumps(request_json(request), separators=(",", ":")).encode()


class Client:
    """Asks EP sites; reuses one channel per site (address and TLS settings).

    ``metadata`` is sent with every call (as HTTP headers to a site asked
    over HTTP); ``retry`` says how UNAVAILABLE (over HTTP: a connection
    not made, 502, 503, 504) is retried. A ``pool`` passed in is shared and
    not closed by :meth:`close`; the HTTP session is the client's own.
    """

    def __init__(
        self,
        *,
        metadata: Metadata = (),
        retry: RetryPolicy | None = None,
        pool: ChannelPool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.metadata = tuple(metadata)
        self.retry = retry or RetryPolicy()
        self._own_pool = pool is None
        self.pool = pool or ChannelPool()
        self._rng = rng or random.Random()
        self._http: HttpSites | None = None

    async def ask(self, site: Site, query: Query, *, deadline: float | Deadline) -> Result:
        """Ask one site. ``deadline`` is seconds from now or a :class:`Deadline`."""
        return await self._ask(site, _Question(query), _deadline(deadline))

    async def ask_many(
        self, sites: Iterable[Site], query: Query, *, deadline: float | Deadline
    ) -> AsyncIterator[Result]:
        """Ask every site at once; yield each :class:`Result` as it arrives.

        All calls share one deadline (a number of seconds counts from the
        start of the iteration), so the last result comes at the latest
        shortly after it. Leaving the loop early cancels the calls still
        running (wrap in ``contextlib.aclosing`` to do so at once).

        :raises ValueError, TypeError: only when ``query`` cannot be encoded
            (taskinfo that is not JSON-like, nested too deeply, with NaN) or
            ``deadline`` is not a usable number of seconds, before any site
            is asked.
        """
        question, until = _Question(query), _deadline(deadline)
        tasks = [asyncio.create_task(self._ask(site, question, until)) for site in sites]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def ask_all(
        self, sites: Iterable[Site], query: Query, *, deadline: float | Deadline
    ) -> list[Result]:
        """Every site's :class:`Result`, in the order they arrived."""
        return [result async for result in self.ask_many(sites, query, deadline=deadline)]

    async def service_info(
        self, site: Site, *, deadline: float | Deadline = 10.0
    ) -> ServiceInfo | Failure:
        """``GetServiceInfo`` of one site, or why it failed."""
        payload = pb.GetServiceInfoRequest().SerializeToString()
        decode = pb.GetServiceInfoResponse.FromString
        reply = await self._call(site, "GetServiceInfo", payload, decode, _deadline(deadline))
        return _converted(reply, service_info_from_proto)

    # --- bookings (the site must know who you are: pass credentials) -------

    async def accept_offer(
        self, site: Site, offer_id: str, *, deadline: float | Deadline = 10.0
    ) -> Booking | Failure:
        """Book a time-slot offer. Safe to retry: accepting twice returns
        the same booking."""
        payload = pb.AcceptOfferRequest(offer_id=offer_id).SerializeToString()
        decode = pb.AcceptOfferResponse.FromString
        reply = await self._call(site, "AcceptOffer", payload, decode, _deadline(deadline))
        return _converted(reply, lambda r: booking_from_proto(r.booking))

    async def reject_offer(
        self, site: Site, offer_id: str, *, deadline: float | Deadline = 10.0
    ) -> Failure | None:
        """Release a time-slot offer."""
        payload = pb.RejectOfferRequest(offer_id=offer_id).SerializeToString()
        decode = pb.RejectOfferResponse.FromString
        reply = await self._call(site, "RejectOffer", payload, decode, _deadline(deadline))
        return reply if isinstance(reply, Failure) else None

    async def bookings(
        self, site: Site, *, deadline: float | Deadline = 10.0
    ) -> list[Booking] | Failure:
        """Your bookings at ``site``: every page, under one deadline."""
        limit, token = _deadline(deadline), ""
        bookings: list[Booking] = []
        for _ in range(10_000):  # pages of 1000: far more than anyone books
            payload = pb.ListBookingsRequest(page_size=1000, page_token=token).SerializeToString()
            decode = pb.ListBookingsResponse.FromString
            reply = await self._call(site, "ListBookings", payload, decode, limit)
            if isinstance(reply, Failure):
                return reply
            page = _converted(reply, lambda r: [booking_from_proto(b) for b in r.bookings])
            if isinstance(page, Failure):
                return page
            bookings += page
            token = reply.next_page_token
            if not token:
                break
        return bookings

    async def cancel_booking(
        self, site: Site, booking_id: str, *, deadline: float | Deadline = 10.0
    ) -> Booking | Failure:
        """Cancel one of your bookings."""
        payload = pb.CancelBookingRequest(booking_id=booking_id).SerializeToString()
        decode = pb.CancelBookingResponse.FromString
        reply = await self._call(site, "CancelBooking", payload, decode, _deadline(deadline))
        return _converted(reply, lambda r: booking_from_proto(r.booking))

    async def _ask(self, site: Site, question: _Question, deadline: Deadline) -> Result:
        start = time.monotonic()
        outcome: Answer | Failure
        if site.over_http:
            outcome = await self._http_sites().ask(site, question.body, deadline)
        else:
            decode = pb.AskResponse.FromString
            reply = await self._call(site, "Ask", question.payload, decode, deadline)
            outcome = _converted(reply, answer_from_proto)
        return Result(site, outcome, time.monotonic() - start)

    def _http_sites(self) -> HttpSites:
        """The HTTP side, made on first use: aiohttp's client is imported
        only by a client that asks a site over HTTP."""
        if self._http is None:
            from ep_server.client.http_sites import HttpSites

            self._http = HttpSites(metadata=self.metadata, retry=self.retry, rng=self._rng)
        return self._http

    async def _call(
        self,
        site: Site,
        method: str,
        payload: bytes,
        decode: Callable[[bytes], R],
        deadline: Deadline,
    ) -> R | Failure:
        """One unary call with retries; every error becomes a :class:`Failure`."""
        if site.over_http:
            return Failure(FailureKind.CLIENT_ERROR, _ONLY_ASKED.format(site.address), attempts=0)
        try:
            async with asyncio.timeout(deadline.remaining() + _GUARD):
                channel = await self.pool.open(site)
                call: Call[R] = channel.unary_unary(_SERVICE + method, response_deserializer=decode)
                return await self._with_retries(channel, call, payload, deadline, site.tls)
        except TimeoutError:
            return Failure(FailureKind.DEADLINE_EXCEEDED, "no answer before the deadline")
        except CredentialsError as exc:
            return Failure(FailureKind.TLS, str(exc), attempts=0)
        except TargetError as exc:  # names of replicas not found
            return Failure(FailureKind.UNREACHABLE, str(exc), attempts=0)
        except Exception as exc:  # one endpoint's bug must not lose the other answers
            return Failure(FailureKind.CLIENT_ERROR, f"{type(exc).__name__}: {exc}")

    async def _with_retries(
        self,
        channel: grpc.aio.Channel,
        call: Call[R],
        payload: bytes,
        deadline: Deadline,
        tls: TLS | None,
    ) -> R | Failure:
        """Retry UNAVAILABLE with backoff while the policy and deadline allow.

        Between attempts, the wait ends early when the channel connects:
        gRPC keeps reconnecting on its own schedule meanwhile, and a call
        made while it still counts the last refusal would fail at once, so
        a server that comes up during the wait is asked as soon as gRPC
        reaches it. A server that answered UNAVAILABLE over a working
        connection is given the whole wait.
        """
        delays = self.retry.delays(self._rng)
        attempts = 0
        while True:
            attempts += 1
            try:
                return await call(payload, timeout=deadline.remaining(), metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                delay = next(delays, None) if is_retryable(exc, tls) else None
                if delay is None or delay >= deadline.remaining():
                    return failure_from_error(exc, attempts, tls)
            if channel.get_state() is grpc.ChannelConnectivity.READY:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.channel_ready(), delay)

    async def close(self) -> None:
        """Close the HTTP session, and the channels unless the pool was passed in."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        if self._own_pool:
            await self.pool.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
