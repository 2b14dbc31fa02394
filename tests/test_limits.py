"""Limits on a real server: the Ask rate per identity, failed
authentications per address (IPv4 host or IPv6 /64), concurrent RPCs, and
the keepalive ping policy.

A refusal is RESOURCE_EXHAUSTED with an ``ErrorInfo`` reason and
``RetryInfo``; good credentials never count as failures, and one wrong token
repeated (sent to many sites by one client) counts once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from fake_plugins.common import SlowAsync
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from live_server import TOKEN, Recorder, Start, ask, bearer, error_info, servers, tokens_file

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as run:
        yield run


def assert_exhausted(error: grpc.aio.AioRpcError, reason: str) -> None:
    """RESOURCE_EXHAUSTED with ErrorInfo ``reason`` and RetryInfo (when to retry)."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == reason
    status = rpc_status.from_call(error)
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert retry, "RESOURCE_EXHAUSTED carries RetryInfo"


async def test_the_ask_rate_limit_is_per_identity(tmp_path, start):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"ask_rate": 0.5, "ask_burst": 2},
    }
    _, stub = await start(config, Recorder())
    for _ in range(2):
        await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)
    assert_exhausted(info.value, "RATE_LIMITED")
    # Another caller (anonymous, by address) has its own bucket.
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES


async def test_an_address_that_keeps_failing_to_authenticate_is_refused_unchecked(tmp_path, start):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"auth_failure_rate": 0.2, "auth_failure_burst": 3},
    }
    _, stub = await start(config, Recorder())
    # the burst of failures: each one UNAUTHENTICATED
    await assert_unauthenticated(stub, [f"guess-{i}-0123456789abcdef" for i in range(3)])
    # Then no guess is checked: not a wrong one, nor (from this address) a right one.
    for token in ("guess-3-0123456789abcdef", TOKEN):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ask(ask(), metadata=bearer(token), timeout=10)
        assert_exhausted(info.value, "AUTH_FAILURES")
    # Calls without credentials are not held up.
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES


async def test_repeating_one_wrong_token_counts_once(tmp_path, start):
    """One token sent to many sites (the ep client's way), some of which do
    not know it: repeating it teaches nothing and must not lock out others
    behind the same address."""
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"auth_failure_rate": 0.01, "auth_failure_burst": 2},
    }
    _, stub = await start(config, Recorder())
    await assert_unauthenticated(stub, ["not-this-site-0123456789abcdef"] * 10)
    assert (await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)).responseword == pb.YES


async def assert_unauthenticated(stub, tokens) -> None:
    """Each token, in turn, is refused as UNAUTHENTICATED (not rate limited)."""
    for token in tokens:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ask(ask(), metadata=bearer(token), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:192.0.2.7:5555", "ipv4:192.0.2.7"),
        ("ipv6:[2001:db8:1:2::7]:5555", "ipv6:2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2:ffff:ffff:ffff:ffff]:1", "ipv6:2001:db8:1:2::/64"),
        ("ipv6:[::ffff:192.0.2.7]:80", "ipv4:192.0.2.7"),
        ("ipv6:[fe80::1%eth0]:80", "ipv6:fe80::/64"),
        ("ipv6:%5B2001:db8:1:2::7%5D:5555", "ipv6:2001:db8:1:2::/64"),
    ],
)
def test_limits_count_ipv4_hosts_and_ipv6_networks(peer, key):
    """An IPv6 host holds a whole /64: a fresh address per guess must not
    mean a fresh bucket."""
    from ep_server.pipeline import _peer_host

    assert _peer_host(peer) == key


async def test_a_real_ipv6_peer_is_counted_by_its_network():
    """gRPC writes IPv6 peers percent-encoded (ipv6:%5B::1%5D:port)."""
    from ep_server.pipeline import _peer_host

    seen = []

    async def echo(request: bytes, context) -> bytes:
        seen.append(_peer_host(context.peer()))
        return b""

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"M": handler}),))
    port = server.add_insecure_port("[::1]:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
            await channel.unary_unary("/t.T/M")(b"", timeout=10)
    finally:
        await server.stop(0)
    assert seen == ["ipv6:::/64"]


async def test_failed_authentication_limit_off_and_successes_never_count(tmp_path, start):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"auth_failure_rate": 0, "auth_failure_burst": 1},
    }
    _, stub = await start(config, Recorder())
    await assert_unauthenticated(stub, [f"guess-{i}-0123456789abcdef" for i in range(5)])
    config["limits"] = {"auth_failure_rate": 0.2, "auth_failure_burst": 1}
    _, stub = await start(config, Recorder())
    for _ in range(5):  # good credentials take nothing from the failure bucket
        assert (await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)).responseword == pb.YES


async def test_max_concurrent_rpcs_is_enforced(start):
    _, stub = await start({"limits": {"max_concurrent_rpcs": 1}}, SlowAsync("uri://slow", 0.5))
    calls = [stub.Ask(ask("uri://slow"), timeout=10) for _ in range(3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    codes = sorted(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    assert "OK" in codes
    assert "RESOURCE_EXHAUSTED" in codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    refused = next(r for r in results if isinstance(r, grpc.aio.AioRpcError))
    assert error_info(refused).reason == "TOO_MANY_REQUESTS"


async def test_a_client_pinging_too_often_is_told_to_calm_down(start, capfd):
    """The keepalive policy: pings from an idle client more often than
    min_ping_interval get GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings"), the
    server carries on, and a well-behaved reconnect is served."""
    server, stub = await start({"limits": {"min_ping_interval": 10}}, Recorder())
    pinging = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=pinging) as channel:
        await pb_grpc.ExecutionPlannerServiceStub(channel).Ask(ask(), timeout=10)
        deadline = time.monotonic() + 10
        seen = ""
        while "too_many_pings" not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            seen += capfd.readouterr().err
    assert "too_many_pings" in seen, "the server did not enforce its ping policy"
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES
