"""The call pipeline on its own: no gRPC, a fake transport."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ep_server.errors import EPError, InvalidArgument, ResourceExhausted, Unauthenticated
from ep_server.logs import REQUEST_ID
from ep_server.model import ANONYMOUS, Identity
from ep_server.pipeline import Call, CallPipeline
from ep_server.ratelimit import RateLimiter


@dataclass
class Inbound:
    """A call as a transport would hand it over."""

    metadata: list[tuple[str, str | bytes]] = field(default_factory=list)
    address: str = "ipv4:127.0.0.1:5555"
    subject: str | None = None
    remaining: float | None = None
    request_id: str = ""
    transport: str = "test"

    def peer(self) -> str:
        return self.address

    def peer_subject(self) -> str | None:
        return self.subject

    def time_remaining(self) -> float | None:
        return self.remaining


class Authenticator:
    """Knows one token, "good"; refuses every other credential."""

    def from_metadata(self, metadata: Any, peer_subject: str | None) -> Identity:
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return Identity(peer_subject, "mtls") if peer_subject else ANONYMOUS
        if values == ["Bearer good"]:
            return Identity("alice", "token")
        from ep_server.auth import AuthError

        raise AuthError("TOKEN_UNKNOWN", "the bearer token is not known here")


class Metrics:
    def __init__(self) -> None:
        self.rpcs: list[tuple[str, str]] = []
        self.sources: list[Callable[[], int]] = []

    def rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.append((method, code))

    def count_in_flight(self, source: Callable[[], int]) -> None:
        self.sources.append(source)

    @property
    def inside(self) -> int:
        return sum(source() for source in self.sources)


async def echo(request: Any, call: Call) -> tuple[Any, Identity, str]:
    return request, call.identity, REQUEST_ID.get()


BEARER = [("authorization", "Bearer good")]


async def test_the_handler_gets_the_request_the_identity_and_a_request_id():
    inbound = Inbound(metadata=BEARER)
    request, identity, seen = await CallPipeline(Authenticator()).run("Ask", inbound, echo, "q")
    assert (request, identity.subject, identity.method) == ("q", "alice", "token")
    assert seen == inbound.request_id != ""
    assert REQUEST_ID.get() == ""  # reset after the call


async def test_a_callers_sane_request_id_is_kept_and_an_odd_one_replaced():
    pipeline = CallPipeline()
    kept = Inbound(metadata=[("x-request-id", "trace-42")])
    await pipeline.run("Ask", kept, echo, None)
    assert kept.request_id == "trace-42"
    odd = Inbound(metadata=[("x-request-id", "has spaces in it")])
    await pipeline.run("Ask", odd, echo, None)
    assert odd.request_id not in ("", "has spaces in it")


async def test_rpcs_outside_the_anonymous_list_need_credentials():
    pipeline = CallPipeline(Authenticator(), anonymous=("Ask",))
    await pipeline.run("Ask", Inbound(), echo, None)
    with pytest.raises(Unauthenticated) as info:
        await pipeline.run("AcceptOffer", Inbound(), echo, None)
    assert info.value.reason == "CREDENTIALS_REQUIRED"
    _, identity, _ = await pipeline.run("AcceptOffer", Inbound(metadata=BEARER), echo, None)
    assert identity.subject == "alice"


async def test_refused_credentials_are_unauthenticated_never_anonymous():
    pipeline = CallPipeline(Authenticator())
    bad = Inbound(metadata=[("authorization", "Bearer guess")])
    with pytest.raises(Unauthenticated) as info:
        await pipeline.run("Ask", bad, echo, None)
    assert info.value.reason == "TOKEN_UNKNOWN"


async def test_the_client_certificate_subject_is_read_only_under_mtls():
    inbound = Inbound(subject="CN=alice")
    _, identity, _ = await CallPipeline(Authenticator()).run("Ask", inbound, echo, None)
    assert identity.anonymous
    _, identity, _ = await CallPipeline(Authenticator(), mtls=True).run("Ask", inbound, echo, None)
    assert (identity.subject, identity.method) == ("CN=alice", "mtls")


async def test_an_address_that_keeps_failing_is_refused_unchecked():
    failures = RateLimiter(rate=0.001, burst=2)
    pipeline = CallPipeline(Authenticator(), auth_failures=failures)
    for guess in ("one", "two"):
        with pytest.raises(Unauthenticated):
            await pipeline.run(
                "Ask", Inbound(metadata=[("authorization", f"Bearer {guess}")]), echo, None
            )
    with pytest.raises(ResourceExhausted) as info:
        await pipeline.run("Ask", Inbound(metadata=BEARER), echo, None)
    assert info.value.reason == "AUTH_FAILURES"
    await pipeline.run("Ask", Inbound(), echo, None)  # anonymous calls still pass
    other = Inbound(metadata=BEARER, address="ipv4:10.0.0.9:1234")
    await pipeline.run("Ask", other, echo, None)  # and other addresses


async def test_the_same_wrong_credential_counts_once():
    failures = RateLimiter(rate=0.001, burst=2)
    pipeline = CallPipeline(Authenticator(), auth_failures=failures)
    same = [("authorization", "Bearer stale")]
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await pipeline.run("Ask", Inbound(metadata=same), echo, None)
    await pipeline.run("Ask", Inbound(metadata=BEARER), echo, None)


async def test_asks_are_rate_limited_per_identity_and_anonymous_ones_per_address():
    pipeline = CallPipeline(Authenticator(), limiter=RateLimiter(rate=0.001, burst=1))
    await pipeline.run("Ask", Inbound(metadata=BEARER), echo, None)
    with pytest.raises(ResourceExhausted) as info:
        await pipeline.run("Ask", Inbound(metadata=BEARER, address="ipv4:10.0.0.9:1"), echo, None)
    assert info.value.reason == "RATE_LIMITED"
    await pipeline.run("Ask", Inbound(), echo, None)  # anonymous: its address's own bucket
    with pytest.raises(ResourceExhausted):
        await pipeline.run("Ask", Inbound(address="ipv4:127.0.0.1:6666"), echo, None)
    await pipeline.run("GetServiceInfo", Inbound(), echo, None)  # only Ask is limited


async def test_calls_past_the_concurrency_limit_are_refused_with_a_retry_delay():
    pipeline = CallPipeline(max_concurrent=1)
    release = asyncio.Event()

    async def waits(request: Any, call: Call) -> None:
        await release.wait()

    first = asyncio.ensure_future(pipeline.run("Ask", Inbound(), waits, None))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted) as info:
        await pipeline.run("Ask", Inbound(), echo, None)
    assert (info.value.reason, info.value.retry_after) == ("TOO_MANY_REQUESTS", 0.1)
    release.set()
    await first
    await pipeline.run("Ask", Inbound(), echo, None)


async def test_an_unexpected_exception_is_internal_naming_the_request_id(caplog):
    async def broken(request: Any, call: Call) -> None:
        raise KeyError("oops")

    metrics = Metrics()
    inbound = Inbound()
    with pytest.raises(EPError) as info:
        await CallPipeline(metrics=metrics).run("Ask", inbound, broken, None)
    assert type(info.value) is EPError
    assert info.value.code.name == "INTERNAL"
    assert inbound.request_id in info.value.message
    assert "unexpected error in Ask" in caplog.text
    assert metrics.rpcs == [("Ask", "INTERNAL")]


async def test_every_call_is_counted_with_its_status_and_in_flight_while_it_runs():
    metrics = Metrics()
    pipeline = CallPipeline(metrics=metrics)
    inside = []

    async def looks(request: Any, call: Call) -> None:
        inside.append(metrics.inside)

    async def invalid(request: Any, call: Call) -> None:
        raise InvalidArgument("AskRequest", [])

    async def cancelled(request: Any, call: Call) -> None:
        raise asyncio.CancelledError

    await pipeline.run("Ask", Inbound(), looks, None)
    with pytest.raises(InvalidArgument):
        await pipeline.run("Ask", Inbound(), invalid, None)
    with pytest.raises(asyncio.CancelledError):
        await pipeline.run("GetServiceInfo", Inbound(), cancelled, None)
    assert inside == [1]
    assert metrics.inside == 0
    assert metrics.rpcs == [
        ("Ask", "OK"), ("Ask", "INVALID_ARGUMENT"), ("GetServiceInfo", "CANCELLED"),
    ]  # fmt: skip


async def test_the_handler_reads_the_callers_deadline_through_the_call():
    async def remaining(request: Any, call: Call) -> float | None:
        return call.time_remaining()

    assert await CallPipeline().run("Ask", Inbound(remaining=1.5), remaining, None) == 1.5


async def test_access_log_lines_name_method_code_and_identity(caplog):
    caplog.set_level("INFO", logger="ep_server.access")
    pipeline = CallPipeline(Authenticator(), access_log=True)
    await pipeline.run("Ask", Inbound(metadata=BEARER), echo, None)
    [record] = [r for r in caplog.records if r.name == "ep_server.access"]
    assert (record.rpc, record.code, record.identity) == ("Ask", "OK", "alice")


async def test_made_up_request_ids_are_32_hex_digits_and_never_repeat():
    pipeline = CallPipeline()
    ids = []
    for _ in range(3):
        inbound = Inbound()
        await pipeline.run("Ask", inbound, echo, None)
        ids.append(inbound.request_id)
    assert all(re.fullmatch(r"[0-9a-f]{32}", each) for each in ids), ids
    assert len(set(ids)) == 3
    assert len({each[:16] for each in ids}) == 1  # one prefix per process
