"""The asyncio client against real in-process EPs and misbehaving endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc
import pytest

from ep_server.client import (
    Answer,
    Client,
    Failure,
    FailureKind,
    IntRange,
    Resources,
    RetryPolicy,
    ServiceInfo,
    Site,
    TaskQuery,
    choose,
)
from ep_server.pb import execution_planner_pb2 as pb

# Fixtures from conftest.py: start_ep (a real EP), fake_ep (a scripted EP),
# silent_address, refused_address.
StartEP = Callable[..., Awaitable[Site]]
FakeEP = Any
SERVICE = "ivoa.ep.v1.ExecutionPlannerService"
DOCKER = "uri://docker-container"
UWS = "uri://docker-uws"

QUERY = TaskQuery(DOCKER, {"image": "docker.io/example:1.0"})
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


async def test_ask_one_site_gets_plain_answer(start_ep: StartEP) -> None:
    site = await start_ep("lab", cores=8)
    async with Client() as client:
        result = await client.ask(site, QUERY, deadline=5)
    assert result.site is site
    answer = result.answer
    assert isinstance(answer, Answer)
    assert answer.yes
    (offer,) = answer.offers
    assert offer.servicetype == UWS
    assert offer.serviceinfo == {"endpoint": "http://example.org/dkuws"}
    assert offer.resources == Resources(cores=IntRange(None, 8))
    assert offer.plugin == "static"
    assert isinstance(answer.raw, pb.AskResponse)
    assert answer.raw.responseword == pb.YES


async def test_resources_are_sent(start_ep: StartEP) -> None:
    site = await start_ep(cores=4)
    query = TaskQuery(DOCKER, {}, Resources(cores=IntRange(8, 16)))
    async with Client() as client:
        result = await client.ask(site, query, deadline=5)
    assert result.answer is not None
    assert result.answer.word == "NO"
    assert [r.code for r in result.answer.reasons] == ["INSUFFICIENT_CORES"]
    assert result.answer.reasons[0].field == "resources.cores.min"


async def test_fan_out_returns_every_answer_and_both_failures(
    start_ep: StartEP, silent_address: str, refused_address: str
) -> None:
    good = [await start_ep(f"ep{i}", cores=2 + i) for i in range(3)]
    silent, refused = Site("silent", silent_address), Site("refused", refused_address)
    deadline = 2.0
    start = time.monotonic()
    arrivals: dict[str, float] = {}
    results = {}
    async with Client() as client:
        async for result in client.ask_many([silent, *good, refused], QUERY, deadline=deadline):
            arrivals[result.site.name] = time.monotonic() - start
            results[result.site.name] = result
    total = time.monotonic() - start
    assert set(results) == {"ep0", "ep1", "ep2", "silent", "refused"}
    assert all(results[s.name].answer is not None for s in good)
    silent_failure, refused_failure = results["silent"].failure, results["refused"].failure
    assert silent_failure is not None
    assert silent_failure.kind is FailureKind.DEADLINE_EXCEEDED
    assert refused_failure is not None
    assert refused_failure.kind is FailureKind.UNREACHABLE
    assert refused_failure.code is grpc.StatusCode.UNAVAILABLE
    assert refused_failure.attempts > 1  # UNAVAILABLE was retried
    # Answers are yielded as they come, well before the hanging one ends.
    assert max(arrivals[s.name] for s in good) < arrivals["silent"]
    assert deadline <= total < deadline + 1.0
    best = choose(results.values(), [UWS])
    assert best is not None
    assert best.site.name == "ep2"  # the most cores


async def test_leaving_the_loop_early_cancels_pending_calls(
    start_ep: StartEP, silent_address: str
) -> None:
    site = await start_ep()
    start = time.monotonic()
    async with Client() as client:
        stream = client.ask_many([Site("silent", silent_address), site], QUERY, deadline=30)
        async with aclosing(stream) as results:
            async for result in results:
                assert result.site is site
                break
    assert time.monotonic() - start < 10


async def test_error_status_is_refused_and_not_retried(fake_ep: FakeEP) -> None:
    fake_ep.script = [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT]
    async with Client(retry=FAST_RETRY) as client:
        result = await client.ask(fake_ep.site, QUERY, deadline=5)
    assert result.failure == Failure(
        FailureKind.REFUSED, "scripted failure", grpc.StatusCode.INVALID_ARGUMENT, attempts=1
    )
    assert len(fake_ep.peers) == 1


async def test_real_server_refuses_a_bad_request(start_ep: StartEP) -> None:
    site = await start_ep()
    async with Client() as client:
        result = await client.ask(site, TaskQuery("not a uri"), deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.REFUSED
    assert result.failure.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_unavailable_is_retried_until_it_answers(fake_ep: FakeEP) -> None:
    fake_ep.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    async with Client(retry=FAST_RETRY) as client:
        result = await client.ask(fake_ep.site, QUERY, deadline=5)
    assert result.answer is not None
    assert result.answer.yes
    assert len(fake_ep.peers) == 3


async def test_unavailable_retries_stop_at_max_attempts(fake_ep: FakeEP) -> None:
    fake_ep.script = [grpc.StatusCode.UNAVAILABLE] * 10
    async with Client(retry=FAST_RETRY) as client:
        result = await client.ask(fake_ep.site, QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.UNREACHABLE
    assert result.failure.attempts == 3
    assert len(fake_ep.peers) == 3


async def test_unavailable_retries_stop_at_the_deadline(fake_ep: FakeEP) -> None:
    fake_ep.script = [grpc.StatusCode.UNAVAILABLE] * 1000
    policy = RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.05)
    start = time.monotonic()
    async with Client(retry=policy) as client:
        result = await client.ask(fake_ep.site, QUERY, deadline=0.5)
    # The deadline stops the retries: without it, 1000 attempts 0.05 s apart
    # take 50 s. (Well above 0.5 s: a loaded machine runs the loop late.)
    assert time.monotonic() - start < 5.0
    assert result.failure is not None
    assert result.failure.kind is FailureKind.UNREACHABLE
    assert 2 <= result.failure.attempts < 20


async def test_a_server_that_comes_up_late_is_reached_by_the_default_retries(
    refused_address: str,
) -> None:
    """gRPC waits before reconnecting to an address that refused it, and
    fails calls at once meanwhile: the retries must outlast that wait, or
    every retry meets the old refusal (4 attempts can go in 0.7 s without
    one reaching the server)."""

    async def yes(request: pb.AskRequest, context: Any) -> pb.AskResponse:
        return pb.AskResponse(responseword=pb.YES, offers=[pb.Offer(servicetype=UWS)])

    async def serve_later() -> grpc.aio.Server:
        await asyncio.sleep(0.3)
        server = grpc.aio.server()
        ask = grpc.unary_unary_rpc_method_handler(
            yes,
            request_deserializer=pb.AskRequest.FromString,
            response_serializer=pb.AskResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Ask": ask}),)
        )
        server.add_insecure_port(refused_address)
        await server.start()
        return server

    later = asyncio.create_task(serve_later())
    try:
        async with Client() as client:
            result = await client.ask(Site("late", refused_address), QUERY, deadline=5)
        assert result.answer is not None, result.failure
        assert result.answer.yes
    finally:
        await (await later).stop(0)


async def test_metadata_is_sent(fake_ep: FakeEP) -> None:
    async with Client(metadata=[("x-ep-test", "hello")]) as client:
        await client.ask(fake_ep.site, QUERY, deadline=5)
    assert fake_ep.metadata[0]["x-ep-test"] == "hello"


async def test_prebuilt_request_is_sent_as_is(fake_ep: FakeEP) -> None:
    async with Client() as client:
        result = await client.ask(fake_ep.site, pb.AskRequest(tasktype="uri://raw"), deadline=5)
    assert result.answer is not None
    assert result.answer.offers[0].serviceinfo["tasktype"] == "uri://raw"


async def test_service_info(start_ep: StartEP) -> None:
    site = await start_ep()
    async with Client() as client:
        info = await client.service_info(site, deadline=5)
    assert isinstance(info, ServiceInfo)
    assert [t.tasktype for t in info.tasktypes] == [DOCKER]
    assert info.tasktypes[0].services[0].servicetype == UWS
    assert "static" in [p.name for p in info.plugins if p.state == "LOADED"]
    assert info.capacity.cores >= 1


async def test_service_info_failure(refused_address: str) -> None:
    async with Client(retry=FAST_RETRY) as client:
        info = await client.service_info(Site("x", refused_address), deadline=5)
    assert isinstance(info, Failure)
    assert info.kind is FailureKind.UNREACHABLE


@pytest.mark.parametrize("count", [20])
async def test_fan_out_to_many_endpoints_on_one_server(start_ep: StartEP, count: int) -> None:
    site = await start_ep()
    sites = [Site(f"s{i}", site.address) for i in range(count)]
    async with Client() as client:
        results = await client.ask_all(sites, QUERY, deadline=10)
        assert len(client.pool) == 1
    assert sorted(r.site.name for r in results) == sorted(s.name for s in sites)
    assert all(r.answer is not None and r.answer.yes for r in results)


@pytest.fixture
async def future_ep() -> AsyncIterator[Site]:
    """An EP from a newer protocol: its verdict word is a value this client
    does not know (proto3 enums are open)."""

    async def ask(request: bytes, context: object) -> bytes:
        reply = pb.AskResponse()
        reply.offers.add(servicetype="uri://s")
        data = reply.SerializeToString()
        return b"\x08\x07" + data  # responseword = 7

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(ask)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Ask": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Site("future", f"127.0.0.1:{port}")
    await server.stop(0)


async def test_an_unreadable_reply_is_that_sites_failure_only(
    future_ep: Site, start_ep: StartEP
) -> None:
    good = await start_ep("good")
    query = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})
    async with Client() as client:
        results = {
            r.site.name: r.outcome
            async for r in client.ask_many([future_ep, good], query, deadline=5)
        }
    assert isinstance(results["future"], Failure)
    assert results["future"].kind is FailureKind.CLIENT_ERROR
    assert isinstance(results["good"], Answer)


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 1e10, 1e12])
async def test_a_deadline_grpc_cannot_keep_is_refused(seconds: float, start_ep: StartEP) -> None:
    site = await start_ep()
    async with Client() as client:
        with pytest.raises(ValueError, match="finite number of seconds"):
            await client.ask(site, TaskQuery("uri://docker-container", {}), deadline=seconds)
        long = await client.ask(site, TaskQuery("uri://docker-container", {}), deadline=1e8)
    assert long.answer is not None, long.failure
