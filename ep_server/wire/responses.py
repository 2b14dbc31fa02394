"""Responses: plain objects in, protobuf out.

A serviceinfo that is a :class:`~ep_server.model.FrozenInfo` (a plugin's
configured one) is encoded once: its serialized ``Struct`` is kept on it and
merged into each answer that offers it. Any other mapping is encoded anew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2

from ep_server.model import (
    Booking,
    BookingState,
    Cause,
    FrozenInfo,
    IntRange,
    Offer,
    Resources,
    Slot,
)
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.planner import Answer
from ep_server.plugins.registry import PluginState, Registry
from ep_server.schedule.ledger import HeldOffer

__all__ = [
    "MAX_TEXT",
    "accept_response",
    "answer_to_proto",
    "booking_to_proto",
    "bookings_page_response",
    "cancel_response",
    "get_response",
    "reject_response",
    "service_info_to_proto",
]

#: Longest reason message or field path sent; plugins' text is cut to it.
MAX_TEXT = 1000

_CAUSE = {
    Cause.REQUEST: pb.REASON_CAUSE_REQUEST,
    Cause.POLICY: pb.REASON_CAUSE_POLICY,
    Cause.CAPACITY: pb.REASON_CAUSE_CAPACITY,
    Cause.INTERNAL: pb.REASON_CAUSE_INTERNAL,
}


def answer_to_proto(answer: Answer) -> pb.AskResponse:
    """Build the ``AskResponse``. An offer whose serviceinfo cannot become a
    Struct is dropped with a PLUGIN_ERROR reason, never an RPC failure."""
    response = pb.AskResponse()
    offers, reasons = response.offers, response.reasons
    for plugin, offer in answer.offers:
        # add() builds in place; append() would copy each offer once more.
        msg = offers.add(plugin=plugin)
        try:
            if isinstance(offer, HeldOffer):
                servicetype = offer.candidate.servicetype
                _held_offer(msg, offer)
            else:
                servicetype = offer.servicetype
                _offer(msg, offer)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            del offers[-1]
            reasons.add(
                code="PLUGIN_ERROR",
                plugin=plugin,
                cause=pb.REASON_CAUSE_INTERNAL,
                message=f"offer of {servicetype!r} has unusable serviceinfo: {exc}",
            )
    for plugin, reason in answer.reasons:
        reason_msg = reasons.add(
            code=reason.code,
            plugin=plugin,
            cause=_CAUSE.get(reason.cause, pb.REASON_CAUSE_UNSPECIFIED),
            retryable=reason.retryable,
            message=reason.message[:MAX_TEXT],
            field=reason.field[:MAX_TEXT],
        )
        if reason.earliest_slot is not None:
            _set_slot(reason_msg.earliest_slot, reason.earliest_slot)
    response.responseword = pb.YES if offers else pb.NO
    return response


def _offer(msg: pb.Offer, offer: Offer) -> None:
    msg.servicetype = offer.servicetype
    msg.message = offer.message
    _fill_struct(msg.serviceinfo, offer.serviceinfo)
    if offer.resources is not None:
        _set_resources(msg.resources, offer.resources)


def _held_offer(msg: pb.Offer, held: HeldOffer) -> None:
    candidate = held.candidate
    msg.servicetype = candidate.servicetype
    msg.id = held.id
    _fill_struct(msg.serviceinfo, candidate.serviceinfo)
    _set_slot(msg.slot, held.slot)
    msg.hold.update({pool: amount for pool, amount in candidate.need.items() if amount})
    need = candidate.need
    _set_resources(
        msg.resources,
        # A pool the offer holds nothing of is left out, as in ``hold``.
        Resources(_exact(need.get("cores") or None), _exact(need.get("memory") or None)),
    )
    if held.expire_time is not None:
        msg.expire_time.FromDatetime(held.expire_time)
    else:
        msg.message = "not held: ask with credentials for an offer you can accept"


def _exact(amount: int | None) -> IntRange:
    return IntRange(amount, amount)


def _set_slot(msg: pb.TimeSlot, slot: Slot) -> None:
    msg.start.FromDatetime(slot.start)
    msg.end.FromDatetime(slot.end)


_BOOKING_STATE = {
    BookingState.BOOKED: pb.BOOKING_STATE_BOOKED,
    BookingState.CANCELLED: pb.BOOKING_STATE_CANCELLED,
    BookingState.FINISHED: pb.BOOKING_STATE_FINISHED,
}


def booking_to_proto(booking: Booking) -> pb.Booking:
    """A :class:`Booking` as an ``ivoa.ep.v1.Booking``."""
    msg = pb.Booking(
        id=booking.id,
        offer_id=booking.offer_id,
        servicetype=booking.servicetype,
        state=_BOOKING_STATE[booking.state],
        owner=booking.owner,
        plugin=booking.plugin,
    )
    _fill_struct(msg.serviceinfo, booking.serviceinfo)
    _set_slot(msg.slot, booking.slot)
    msg.hold.update({pool: amount for pool, amount in booking.need.items() if amount})
    msg.create_time.FromDatetime(booking.create_time)
    return msg


def _fill_struct(target: struct_pb2.Struct, info: Mapping[str, Any]) -> None:
    """``Struct.update`` with a fast path for the usual flat string values,
    and the kept encoding of a FrozenInfo."""
    if type(info) is FrozenInfo:
        encoded = info._encoded
        if encoded is None:
            encoded = _encoded(info)
        target.MergeFromString(encoded)
        return
    if not isinstance(info, Mapping):
        raise TypeError(f"serviceinfo must be a mapping, not {type(info).__name__}")
    fields = target.fields
    for key, value in info.items():
        if type(value) is str:
            fields[key].string_value = value
        else:
            target.update({key: value})


def _encoded(info: FrozenInfo) -> bytes:
    """``info`` as a serialized ``Struct``, kept on it for the next answer
    (it cannot change: :class:`FrozenInfo` refuses every change)."""
    struct = struct_pb2.Struct()
    struct.update(info)
    encoded: bytes = struct.SerializeToString()
    # Set past FrozenInfo.__setattr__, which refuses every change.
    object.__setattr__(info, "_encoded", encoded)
    return encoded


def _set_resources(msg: pb.Resources, resources: Resources) -> None:
    """Set each range that has an end; a range open at both ends stays unset."""
    cores, memory = resources.cores, resources.memory
    if cores.min is not None or cores.max is not None:
        _set_range(msg.cores, cores)
    if memory.min is not None or memory.max is not None:
        _set_range(msg.memory, memory)


def _set_range(msg: pb.Range, rng: IntRange) -> None:
    # Setting either end marks the range (and so the resources) present.
    if rng.min is not None:
        msg.min = rng.min
    if rng.max is not None:
        msg.max = rng.max


def accept_response(booking: Booking) -> pb.AcceptOfferResponse:
    return pb.AcceptOfferResponse(booking=booking_to_proto(booking))


def get_response(booking: Booking) -> pb.GetBookingResponse:
    return pb.GetBookingResponse(booking=booking_to_proto(booking))


def cancel_response(booking: Booking) -> pb.CancelBookingResponse:
    return pb.CancelBookingResponse(booking=booking_to_proto(booking))


def reject_response() -> pb.RejectOfferResponse:
    return pb.RejectOfferResponse()


def bookings_page_response(page: Sequence[Booking], next_token: str) -> pb.ListBookingsResponse:
    return pb.ListBookingsResponse(
        bookings=[booking_to_proto(b) for b in page], next_page_token=next_token
    )


# --- GetServiceInfo ------------------------------------------------------------

_STATE = {
    PluginState.LOADED: pb.PLUGIN_STATE_LOADED,
    PluginState.FAILED: pb.PLUGIN_STATE_FAILED,
    PluginState.BLOCKED: pb.PLUGIN_STATE_BLOCKED,
}


def service_info_to_proto(
    registry: Registry, pools: Mapping[str, int], version: str
) -> pb.GetServiceInfoResponse:
    """The ``GetServiceInfo`` answer: the plugins, the task types and the
    services offered for each, the host's capacity and the booking pools."""
    info = pb.GetServiceInfoResponse(server_version=version)
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
    info.pools.update(pools)
    return info
