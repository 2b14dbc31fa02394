"""A flood of concurrent clients asking and booking across replicas, and
everything they saw, for tests/test_replicas.py.

Each client is one coroutine with a caller's token. Its rounds: an ``Ask``
with a schedule through one replica; on YES, the accept of one of the
offers through two other replicas at once (both must answer with the same
booking). Each client spreads its calls over the replicas, starting at a
different one each round. Bounded in count (``rounds`` per client, and at
most ``_ATTEMPTS`` tries per call) and in time (``seconds`` for the whole
flood; each call's own gRPC deadline).

A client does what a careful real client does with failures: on
UNAVAILABLE with the ledger's reason it waits the RetryInfo delay (at most
a second) and asks again, through the next replica; on UNAVAILABLE from
gRPC itself (a replica gone) it asks the next replica at once. Anything
else that is not an answer is a wrong answer, as are: a YES whose offer
then cannot be accepted, an accept answering another booking than its
twin, a booking for another offer than the one accepted, and an
UNAVAILABLE from the ledger without a RetryInfo.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc

__all__ = ["Answer", "Flood", "Seen", "ask_request", "classify"]

TASKTYPE = "uri://docker-container"
GIB = 2**30
#: Tries per call (the first and the retries).
_ATTEMPTS = 40
#: Each call's gRPC deadline, in seconds.
CALL_SECONDS = 20.0


@dataclass
class Seen:
    """What the clients of one flood saw (one event loop: no locks)."""

    #: Offer id -> (owner, index of the replica that answered with it).
    offers: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Offer id -> the booking id its accepts answered with.
    booked: dict[str, str] = field(default_factory=dict)
    #: When each acknowledgement of a booking came (``time.monotonic``).
    booked_at: dict[str, float] = field(default_factory=dict)
    yes: int = 0
    no: int = 0
    #: UNAVAILABLE for the ledger, each with a RetryInfo.
    unavailable: int = 0
    #: UNAVAILABLE from gRPC itself: the replica could not be reached.
    unreachable: int = 0
    #: Everything that must never happen, described.
    wrong: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """One call's outcome: the reply, or how it failed."""

    reply: object = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str | None = None
    retry_after: float | None = None
    details: str = ""


def classify(error: grpc.aio.AioRpcError) -> Answer:
    """The status code, ErrorInfo reason and RetryInfo delay of a failed call."""
    reason, retry = None, None
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry = delay.retry_delay.ToTimedelta().total_seconds()
    return Answer(None, error.code(), reason, retry, error.details() or "")


def ask_request(
    rng: random.Random, now: datetime, after: timedelta = timedelta(hours=1)
) -> pb.AskRequest:
    """An Ask with a schedule: a 4-hour start window within four days from
    ``after`` from now, 1 to 3 hours, 1 to 8 cores and 2 GiB per core."""
    start = now + after + timedelta(minutes=rng.randrange(96 * 60))
    cores = rng.randint(1, 8)
    request = {
        "tasktype": TASKTYPE,
        "resources": {"cores": {"min": cores}, "memory": {"min": str(cores * 2 * GIB)}},
        "schedule": {
            "windows": [
                {"start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat()}
            ],
            "min_duration": f"{rng.randint(1, 3) * 3600}s",
        },
    }
    return json_format.ParseDict(request, pb.AskRequest())


class Flood:
    """``clients`` clients over ``stubs`` (one per replica), as ``owners``
    in turn, ``rounds`` rounds each, for at most ``seconds``."""

    def __init__(
        self,
        stubs: Sequence[pb_grpc.ExecutionPlannerServiceStub],
        owners: Sequence[str],
        token_of: Callable[[str], str],
        *,
        clients: int = 200,
        rounds: int = 3,
        seconds: float = 60.0,
        seed: int = 12,
    ) -> None:
        self.stubs = list(stubs)
        self.owners, self.token_of = owners, token_of
        self.clients, self.rounds, self.seconds, self.seed = clients, rounds, seconds, seed
        self.seen = Seen()
        self.deadline = 0.0
        self.now = datetime.now(UTC)

    async def run(self) -> Seen:
        """Run every client to its end (or the flood's time to its end)."""
        self.deadline = time.monotonic() + self.seconds
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))
        return self.seen

    async def progress(self, bookings: int, seconds: float) -> None:
        """Wait until the flood has ``bookings`` acknowledged bookings (at
        most ``seconds``; then the test goes on anyway)."""
        for _ in range(int(seconds / 0.05)):
            if len(self.seen.booked) >= bookings:
                return
            await asyncio.sleep(0.05)

    # --- One client ------------------------------------------------------------------

    async def _client(self, n: int) -> None:
        rng = random.Random(self.seed * 100_000 + n)
        owner = self.owners[n % len(self.owners)]
        metadata = (("authorization", f"Bearer {self.token_of(owner)}"),)
        k = len(self.stubs)
        for r in range(self.rounds):
            if time.monotonic() > self.deadline:
                return
            first = (n + r) % k
            request = ask_request(rng, self.now)
            made = await self.call("Ask", request, metadata, first)
            if made is None:
                continue
            reply, by = made
            assert isinstance(reply, pb.AskResponse)
            if reply.responseword != pb.YES:
                self.seen.no += 1
                continue
            self.seen.yes += 1
            for offer in reply.offers:
                self.seen.offers[offer.id] = (owner, by)
            offer_id = rng.choice(reply.offers).id
            accept = pb.AcceptOfferRequest(offer_id=offer_id)
            twins = await asyncio.gather(
                self.call("AcceptOffer", accept, metadata, (by + 1) % k),
                self.call("AcceptOffer", accept, metadata, (by + 2) % k),
            )
            self._check_twins(offer_id, [t[0] for t in twins if t is not None])

    def _check_twins(self, offer_id: str, replies: list[object]) -> None:
        ids = set()
        for reply in replies:
            assert isinstance(reply, pb.AcceptOfferResponse)
            booking = reply.booking
            if booking.offer_id != offer_id or booking.state != pb.BOOKING_STATE_BOOKED:
                self.seen.wrong.append(f"accept of {offer_id} answered {booking}")
            ids.add(booking.id)
        if len(ids) > 1:
            self.seen.wrong.append(f"accepts of {offer_id} through two replicas gave {ids}")
        if ids:
            self.seen.booked[offer_id] = ids.pop()
            self.seen.booked_at[offer_id] = time.monotonic()

    async def call(
        self, method: str, request: object, metadata: tuple[tuple[str, str], ...], first: int
    ) -> tuple[object, int] | None:
        """``method`` through replica ``first``, then the next ones while
        they are unavailable; the reply and the replica that gave it, or
        None (a wrong answer recorded: running out of tries or of the
        flood's time counts as one)."""
        seen = self.seen
        for attempt in range(_ATTEMPTS):
            if time.monotonic() > self.deadline:
                seen.wrong.append(f"{method}: the flood's {self.seconds:g} s ran out")
                return None
            i = (first + attempt) % len(self.stubs)
            rpc = getattr(self.stubs[i], method)
            try:
                return await rpc(request, metadata=metadata, timeout=CALL_SECONDS), i
            except grpc.aio.AioRpcError as error:
                answer = classify(error)
            if answer.code == grpc.StatusCode.UNAVAILABLE and answer.reason is None:
                seen.unreachable += 1  # the replica is gone: the next one
                continue
            if answer.code == grpc.StatusCode.UNAVAILABLE and answer.reason == "LEDGER_UNAVAILABLE":
                if answer.retry_after is None:
                    seen.wrong.append(f"{method}: UNAVAILABLE without RetryInfo")
                seen.unavailable += 1
                await asyncio.sleep(min(answer.retry_after or 1.0, 1.0))
                continue
            seen.wrong.append(f"{method} through replica {i}: {answer.code.name} "
                              f"{answer.reason} {answer.details}")  # fmt: skip
            return None
        seen.wrong.append(f"{method}: still unavailable after {_ATTEMPTS} tries")
        return None
