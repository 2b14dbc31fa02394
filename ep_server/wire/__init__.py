"""The edge: protobuf messages in, plain objects out, and back.

This package is the only place that reads or builds ``ivoa.ep.v1`` messages
(and ``google.rpc.Status``): the planner, the schedule and plugins never see
protobuf, and the RPC methods (:mod:`ep_server.servicer`) only call these
functions.

- :mod:`~ep_server.wire.requests`: requests decoded and validated;
- :mod:`~ep_server.wire.undecodable`: what is wrong with bytes protobuf refused;
- :mod:`~ep_server.wire.responses`: answers, bookings and service info encoded;
- :mod:`~ep_server.wire.status`: errors as ``google.rpc.Status``.
"""

from __future__ import annotations

from ep_server.wire.requests import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    Limits,
    Undecodable,
    bookings_page_from_request,
    decoder,
    id_from_request,
    info_request_checked,
    query_from_request,
)
from ep_server.wire.responses import (
    MAX_TEXT,
    accept_response,
    answer_to_proto,
    booking_to_proto,
    bookings_page_response,
    cancel_response,
    get_response,
    reject_response,
    service_info_to_proto,
)
from ep_server.wire.status import status_proto

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_TEXT",
    "PAGE_SIZE",
    "Limits",
    "Undecodable",
    "accept_response",
    "answer_to_proto",
    "booking_to_proto",
    "bookings_page_from_request",
    "bookings_page_response",
    "cancel_response",
    "decoder",
    "get_response",
    "id_from_request",
    "info_request_checked",
    "query_from_request",
    "reject_response",
    "service_info_to_proto",
    "status_proto",
]
