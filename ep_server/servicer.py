"""The ``ExecutionPlannerService`` RPCs: thin, converting at the edge only."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import grpc

from ep_server.errors import FailedPrecondition, FieldViolation, InvalidArgument
from ep_server.metrics import Metrics
from ep_server.model import ANONYMOUS, Cause, Identity, Reason, TaskQuery
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.planner import Answer, Planner
from ep_server.plugins import PluginState, Registry
from ep_server.schedule.scheduler import SCHEDULING_UNSUPPORTED, Scheduler
from ep_server.wire import (
    Limits,
    Undecodable,
    answer_to_proto,
    booking_to_proto,
    query_from_request,
)

__all__ = ["ExecutionPlannerServicer", "service_info"]

#: ListBookings pages: the default and the largest.
_PAGE_SIZE = 100
_MAX_PAGE_SIZE = 1000

# Leave this much of the caller's own deadline for sending the answer back.
_REPLY_MARGIN = 0.05

_STATE = {
    PluginState.LOADED: pb.PLUGIN_STATE_LOADED,
    PluginState.FAILED: pb.PLUGIN_STATE_FAILED,
    PluginState.BLOCKED: pb.PLUGIN_STATE_BLOCKED,
}


def server_version() -> str:
    """The installed ep-server version."""
    try:
        return version("ep-server")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


class ExecutionPlannerServicer:
    """Implements the RPCs on a :class:`Planner`."""

    def __init__(
        self,
        planner: Planner,
        limits: Limits,
        metrics: Metrics | None = None,
        scheduler: Scheduler | None = None,
        pools: Mapping[str, int] | None = None,
    ) -> None:
        self.planner = planner
        self.limits = limits
        self.metrics = metrics
        self.scheduler = scheduler
        # What GetServiceInfo says never changes while the server runs.
        self._info = service_info(planner.registry)
        self._info.pools.update(pools or {})

    async def Ask(
        self,
        request: pb.AskRequest | Undecodable,
        context: grpc.aio.ServicerContext[Any, Any],
        identity: Identity = ANONYMOUS,
    ) -> pb.AskResponse:
        """Answer "can I do this?"."""
        query = query_from_request(request, self.limits, identity)
        remaining = context.time_remaining()
        budget = None if remaining is None else remaining - _REPLY_MARGIN
        # One deadline for the whole Ask: policies, plugins and (for a
        # schedule) their ep_resources and ep_slot.
        until = self.planner.deadline_at(budget)
        answer = await self.planner.ask(query, until=until)
        if query.schedule is not None and answer.yes:
            answer = await self._schedule(query, answer, until)
        response = answer_to_proto(answer)
        if self.metrics is not None:
            self.metrics.answer("YES" if response.offers else "NO", len(response.offers))
        return response

    async def GetServiceInfo(
        self,
        request: pb.GetServiceInfoRequest | Undecodable,
        context: grpc.aio.ServicerContext[Any, Any],
        identity: Identity = ANONYMOUS,
    ) -> pb.GetServiceInfoResponse:
        """Describe this EP."""
        if isinstance(request, Undecodable):
            raise InvalidArgument(
                "GetServiceInfoRequest", [FieldViolation("", f"undecodable: {request.error}")]
            )
        return self._info

    async def _schedule(self, query: TaskQuery, answer: Answer, until: float) -> Answer:
        if self.scheduler is None:
            why = "this site takes no bookings; ask without a schedule"
            reason = Reason(SCHEDULING_UNSUPPORTED, why, Cause.POLICY, field="schedule")
            return Answer((), [("", reason), *answer.reasons])
        return await self.scheduler.place(query, answer, until)

    # --- bookings: never anonymous (see ep_server.config.RPC_NAMES) -------

    def _bookings(self) -> Scheduler:
        if self.scheduler is None:
            raise FailedPrecondition("this site takes no bookings", reason="SCHEDULING_UNSUPPORTED")
        return self.scheduler

    async def AcceptOffer(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], identity: Identity
    ) -> pb.AcceptOfferResponse:
        """Book a time-slot offer."""
        offer_id = _id(request, "offer_id")
        booking = await self._bookings().accept(offer_id, identity)
        if self.metrics is not None:
            self.metrics.bookings("booked")
        return pb.AcceptOfferResponse(booking=booking_to_proto(booking))

    async def RejectOffer(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], identity: Identity
    ) -> pb.RejectOfferResponse:
        """Release a time-slot offer."""
        await self._bookings().reject(_id(request, "offer_id"), identity)
        if self.metrics is not None:
            self.metrics.bookings("rejected")
        return pb.RejectOfferResponse()

    async def GetBooking(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], identity: Identity
    ) -> pb.GetBookingResponse:
        """One of the caller's bookings."""
        booking = await self._bookings().get(_id(request, "booking_id"), identity)
        return pb.GetBookingResponse(booking=booking_to_proto(booking))

    async def ListBookings(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], identity: Identity
    ) -> pb.ListBookingsResponse:
        """The caller's own bookings, a page at a time. The page token is the
        id of the last booking on the previous page (bookings are never
        deleted, so it stays valid)."""
        if isinstance(request, Undecodable):
            raise InvalidArgument("ListBookingsRequest", [FieldViolation("", request.error)])
        bookings = await self._bookings().bookings(identity)
        start = 0
        if request.page_token:
            ids = [b.id for b in bookings]
            if request.page_token not in ids:
                raise InvalidArgument(
                    "ListBookingsRequest", [FieldViolation("page_token", "is not from this list")]
                )
            start = ids.index(request.page_token) + 1
        if request.page_size < 0:
            raise InvalidArgument(
                "ListBookingsRequest", [FieldViolation("page_size", "must not be negative")]
            )
        size = min(request.page_size or _PAGE_SIZE, _MAX_PAGE_SIZE)
        page = bookings[start : start + size]
        more = start + size < len(bookings)
        return pb.ListBookingsResponse(
            bookings=[booking_to_proto(b) for b in page],
            next_page_token=page[-1].id if more and page else "",
        )

    async def CancelBooking(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], identity: Identity
    ) -> pb.CancelBookingResponse:
        """Cancel one of the caller's bookings."""
        booking, changed = await self._bookings().cancel(_id(request, "booking_id"), identity)
        if changed and self.metrics is not None:
            self.metrics.bookings("cancelled")
        return pb.CancelBookingResponse(booking=booking_to_proto(booking))


_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _id(request: Any, name: str) -> str:
    """The offer or booking id a request names, checked."""
    what = type(request).__name__
    if isinstance(request, Undecodable):
        raise InvalidArgument("request", [FieldViolation("", f"undecodable: {request.error}")])
    value = getattr(request, name)
    if not _ID.fullmatch(value):
        problem = "is required" if not value else "is not an id (1-128 of A-Z a-z 0-9 _ -)"
        raise InvalidArgument(what, [FieldViolation(name, problem)])
    return str(value)


def service_info(registry: Registry) -> pb.GetServiceInfoResponse:
    """Build the ``GetServiceInfo`` answer from the registry."""
    info = pb.GetServiceInfoResponse(server_version=server_version())
    by_tasktype: dict[str, list[pb.ServiceTypeInfo]] = {}
    for record in registry.records:
        info.plugins.append(
            pb.PluginInfo(
                name=record.name,
                distribution=record.distribution,
                version=record.version,
                state=_STATE[record.state],
                error=record.error,
                tasktypes=[c.tasktype for c in record.claims],
                servicetypes=list(dict.fromkeys(s for c in record.claims for s in c.servicetypes)),
            )
        )
        for claim in record.claims:
            services = by_tasktype.setdefault(claim.tasktype, [])
            services.extend(
                pb.ServiceTypeInfo(servicetype=s, plugin=record.name) for s in claim.servicetypes
            )
    for tasktype in sorted(by_tasktype):
        info.tasktypes.append(pb.TaskTypeInfo(tasktype=tasktype, services=by_tasktype[tasktype]))
    host = registry.host
    info.capacity.CopyFrom(
        pb.HostCapacity(
            cores=host.cores, memory=host.memory, architecture=host.architecture, os=host.os
        )
    )
    return info
