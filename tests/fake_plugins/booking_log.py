"""A plugin module loaded by import path in server processes: offers
``uri://booking-log-service`` for ``uri://docker-container`` (the task
holds the request's minimum cores and memory) and appends the id of every
booking announced to it (``ep_booked``) as a line of ``[plugin.booking_log]
file``. Replicas given the same file write to it together: one ``write``
of one short line on a file opened for appending lands whole, so the file
says how often each booking was announced, across processes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ep_server import Booking, Claim, Offer, TaskQuery, Verdict, hookimpl

TASKTYPE = "uri://docker-container"
SERVICETYPE = "uri://booking-log-service"


@hookimpl
def ep_configure(settings: Mapping[str, Any]) -> str:
    return str(settings["file"])


@hookimpl
def ep_claims() -> list[Claim]:
    return [Claim(TASKTYPE, (SERVICETYPE,))]


@hookimpl
async def ep_evaluate(query: TaskQuery) -> Verdict:
    return Verdict.yes(Offer(SERVICETYPE, {"endpoint": "http://127.0.0.1:1/uws"}))


@hookimpl
def ep_booked(booking: Booking, config: str) -> None:
    fd = os.open(config, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{booking.id}\n".encode())
    finally:
        os.close(fd)
