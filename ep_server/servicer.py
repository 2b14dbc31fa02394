"""The ``ExecutionPlannerService`` RPCs, and their gRPC handlers.

:class:`ExecutionPlannerServicer` has one thin method per RPC: decode the
request (:mod:`ep_server.wire`), do the work on plain objects (the planner,
the bookings), encode the answer. The methods take a protobuf request and a
:class:`~ep_server.pipeline.Call` (who is calling, and until when) and know
nothing of gRPC, so that any transport can call them.

:func:`grpc_handler` serves them over gRPC: one handler per method of the
service descriptor, each decoding with the one :func:`~ep_server.wire.decoder`,
running the method through the :class:`~ep_server.pipeline.CallPipeline`, and
turning an :class:`~ep_server.errors.EPError` into a ``google.rpc.Status``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

import grpc
from grpc_status import rpc_status

from ep_server import wire
from ep_server.auth import subject_from_auth_context
from ep_server.errors import EPError, FailedPrecondition
from ep_server.metrics import Metrics
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pipeline import REQUEST_ID_KEY, Call, CallPipeline
from ep_server.planner import SCHEDULING_UNSUPPORTED, Planner
from ep_server.schedule.bookings import Bookings

__all__ = ["SERVICE", "ExecutionPlannerServicer", "grpc_handler", "server_version"]

#: The service's descriptor: its full name and methods.
SERVICE = pb.DESCRIPTOR.services_by_name["ExecutionPlannerService"]

# Leave this much of the caller's own deadline for sending the answer back.
_REPLY_MARGIN = 0.05


def server_version() -> str:
    """The installed ep-server version."""
    try:
        return version("ep-server")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


class ExecutionPlannerServicer:
    """The RPCs, on the planner and (when the site takes bookings) the
    bookings."""

    def __init__(
        self,
        planner: Planner,
        limits: wire.Limits,
        info: pb.GetServiceInfoResponse,
        bookings: Bookings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.planner = planner
        self.limits = limits
        self.info = info  # never changes while the server runs
        self.bookings = bookings
        self.metrics = metrics

    async def Ask(self, request: pb.AskRequest | wire.Undecodable, call: Call) -> pb.AskResponse:
        """Answer "can I do this?"."""
        query = wire.query_from_request(request, self.limits, call.identity)
        remaining = call.time_remaining()
        budget = None if remaining is None else remaining - _REPLY_MARGIN
        response = wire.answer_to_proto(await self.planner.ask(query, budget))
        if self.metrics is not None:
            # Read once: each read of a repeated field is a lookup in protobuf.
            offers = len(response.offers)
            self.metrics.answer("YES" if offers else "NO", offers)
        return response

    async def GetServiceInfo(
        self, request: pb.GetServiceInfoRequest | wire.Undecodable, call: Call
    ) -> pb.GetServiceInfoResponse:
        """Describe this EP."""
        wire.info_request_checked(request)
        return self.info

    # --- bookings: never anonymous (see ep_server.config.RPC_NAMES) -------

    def _bookings(self) -> Bookings:
        if self.bookings is None:
            raise FailedPrecondition("this site takes no bookings", reason=SCHEDULING_UNSUPPORTED)
        return self.bookings

    async def AcceptOffer(self, request: Any, call: Call) -> pb.AcceptOfferResponse:
        """Book a time-slot offer."""
        offer_id = wire.id_from_request(request, "offer_id")
        return wire.accept_response(await self._bookings().accept(offer_id, call.identity))

    async def RejectOffer(self, request: Any, call: Call) -> pb.RejectOfferResponse:
        """Release a time-slot offer."""
        await self._bookings().reject(wire.id_from_request(request, "offer_id"), call.identity)
        return wire.reject_response()

    async def GetBooking(self, request: Any, call: Call) -> pb.GetBookingResponse:
        """One of the caller's bookings."""
        booking_id = wire.id_from_request(request, "booking_id")
        return wire.get_response(await self._bookings().get(booking_id, call.identity))

    async def ListBookings(self, request: Any, call: Call) -> pb.ListBookingsResponse:
        """The caller's own bookings, a page at a time."""
        size, token = wire.bookings_page_from_request(request)
        page, next_token = await self._bookings().page(call.identity, size, token)
        return wire.bookings_page_response(page, next_token)

    async def CancelBooking(self, request: Any, call: Call) -> pb.CancelBookingResponse:
        """Cancel one of the caller's bookings."""
        booking_id = wire.id_from_request(request, "booking_id")
        return wire.cancel_response(await self._bookings().cancel(booking_id, call.identity))


# --- gRPC ------------------------------------------------------------------------

Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Call], Awaitable[Any]]


class _GrpcCall:
    """A gRPC call as the pipeline sees it (:class:`~ep_server.pipeline.Inbound`)."""

    __slots__ = ("context", "request_id")

    transport = "grpc"

    def __init__(self, context: Context) -> None:
        self.context = context
        self.request_id = ""

    @property
    def metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return cast("Sequence[tuple[str, str | bytes]]", self.context.invocation_metadata() or ())

    def peer(self) -> str:
        return self.context.peer()

    def peer_subject(self) -> str | None:
        return subject_from_auth_context(self.context.auth_context())

    def time_remaining(self) -> float | None:
        return self.context.time_remaining()


def grpc_handler(
    servicer: ExecutionPlannerServicer, pipeline: CallPipeline
) -> grpc.GenericRpcHandler:
    """The gRPC handlers of every RPC of the service, built once."""
    handlers = {}
    for method in SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _handler(method.name, getattr(servicer, method.name), pipeline),
            request_deserializer=wire.decoder(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


def _handler(
    name: str, method: Method, pipeline: CallPipeline
) -> Callable[[Any, Context], Awaitable[Any]]:
    async def handle(request: Any, context: Context) -> Any:
        call = _GrpcCall(context)
        try:
            response = await pipeline.run(name, call, method, request)
        except EPError as exc:
            status = rpc_status.to_status(wire.status_proto(exc))
            trailer = (*status.trailing_metadata, (REQUEST_ID_KEY, call.request_id))
            await context.abort(status.code, status.details, trailer)
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        return response

    handle.__name__ = name
    return handle
