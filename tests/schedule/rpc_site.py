"""Helpers for the booking tests on a real server: a clock the tests set,
test plugins that offer and hold, two callers with tokens, and scheduled
Asks."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta

from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ep_server import Cause, Claim, Offer, Reason, TaskQuery, Verdict, hookimpl
from ep_server.pb import execution_planner_pb2 as pb

DOCKER = "uri://docker-container"
T0 = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TOKENS = {"alice": "alice-token-0123456789abcdef-0001", "bob": "bob-token-0123456789abcdef-00002"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Booker:
    """Offers a docker service; holds what the taskinfo says; refuses slots
    starting at 13:00; records bookings and cancellations."""

    def __init__(self) -> None:
        self.booked: list[str] = []
        self.cancelled: list[str] = []

    @hookimpl
    def ep_claims(self):
        return [Claim(DOCKER, ("uri://docker-uws",))]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery):
        return Verdict.yes(Offer("uri://docker-uws", {"endpoint": "http://127.0.0.1:1/uws"}))

    @hookimpl
    def ep_resources(self, query: TaskQuery):
        return {"cores": int(query.taskinfo.get("cores", 1)), "memory": 0}

    @hookimpl
    def ep_slot(self, slot):
        if slot.start.hour == 13:
            return Reason("LUNCH", "no tasks start at lunch", Cause.POLICY)
        return None

    @hookimpl
    async def ep_booked(self, booking):
        self.booked.append(booking.id)

    @hookimpl
    def ep_cancelled(self, booking):
        self.cancelled.append(booking.id)


def tokens_file(tmp_path):
    lines = []
    for name, token in TOKENS.items():
        lines.append(
            f'[tokens.{name}]\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        )
    path = tmp_path / "tokens.toml"
    path.write_text("".join(lines))
    return path


def who(name):
    return (("authorization", f"Bearer {TOKENS[name]}"),)


async def ask_as(stub, user=None, **schedule):
    metadata = who(user) if user else None
    return await stub.Ask(scheduled(**schedule), metadata=metadata, timeout=10)


def accept(stub, offer_id, user="alice", **kwargs):
    request = pb.AcceptOfferRequest(offer_id=offer_id)
    return stub.AcceptOffer(request, metadata=who(user), **kwargs)


def scheduled(cores=4, windows=((T0, T0 + 8 * HOUR),), hours=2, max_hours=None):
    request = {
        "tasktype": DOCKER,
        "taskinfo": {"cores": cores},
        "schedule": {
            "windows": [{"start": s.isoformat(), "end": e.isoformat()} for s, e in windows],
            "min_duration": f"{hours * 3600}s",
        },
    }
    if max_hours:
        request["schedule"]["max_duration"] = f"{max_hours * 3600}s"
    return json_format.ParseDict(request, pb.AskRequest())


def reason_of(error):
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def start_of(offer):
    return offer.slot.start.ToDatetime(tzinfo=UTC)


class Offers:
    """Offers its own service type (``uri://<name>``) for DOCKER, and nothing
    else: whatever slot is found is held."""

    def __init__(self, name, release=None):
        self.name, self.release = name, release

    @hookimpl
    def ep_claims(self):
        return [Claim(DOCKER, (f"uri://{self.name}",))]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery):
        return Verdict.yes(Offer(f"uri://{self.name}", {"endpoint": "http://127.0.0.1:1/x"}))


class SlotPlugin(Offers):
    """Offers; its ep_slot is quick, or stuck until ``release`` is set."""

    @hookimpl
    def ep_slot(self, slot):
        if self.release is not None:
            self.release.wait(30)
        return None


async def timed_ask(stub):
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await stub.Ask(scheduled(cores=1), metadata=who("alice"), timeout=10)
    return answer, loop.time() - started


class SlowSlots(SlotPlugin):
    """ep_slot returns (or raises ``error``) after ``seconds`` every call."""

    def __init__(self, name, seconds, error=None):
        super().__init__(name)
        self.seconds, self.error, self.calls = seconds, error, 0

    @hookimpl
    def ep_slot(self, slot):
        self.calls += 1
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return None


class StuckResources(Offers):
    """Offers; its plain ep_resources blocks until released (a hung lookup)."""

    @hookimpl
    def ep_resources(self, query: TaskQuery):
        self.release.wait(30)
        return {"cores": 3}
