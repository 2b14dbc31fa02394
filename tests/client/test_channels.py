"""The client's channels: one per target, and TLS as the caller sees it.

A channel is made once per address and TLS settings and reused for every
call to that target; a site's replicas share one channel that spreads the
calls over them. TLS problems (a plaintext server, an unreadable CA, a
missing client certificate, a server name the certificate does not have)
end in a :class:`FailureKind.TLS` failure that is not retried, since the next
attempt would fail the same way.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ep_server.client import TLS, Client, FailureKind, RetryPolicy, Site, TaskQuery

# Fixtures from conftest.py: start_ep (a real EP), fake_ep and tls_fake_ep
# (scripted EPs), certs, replicas (three real EPs counting their Asks).
StartEP = Callable[..., Awaitable[Site]]
FakeEP = Any
Certs = Any
Replicas = Any

QUERY = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


async def test_channels_are_reused_per_target(fake_ep: FakeEP, start_ep: StartEP) -> None:
    other = await start_ep()
    async with Client() as client:
        for _ in range(3):
            await client.ask(fake_ep.site, QUERY, deadline=5)
        await client.ask(other, QUERY, deadline=5)
        assert len(client.pool) == 2
    assert len(client.pool) == 0
    assert len(set(fake_ep.peers)) == 1  # one connection served all three calls


async def test_tls_to_a_plaintext_server_is_a_tls_failure(start_ep: StartEP) -> None:
    site = await start_ep()
    async with Client(retry=FAST_RETRY) as client:
        result = await client.ask(Site("tls", site.address, TLS()), QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TLS
    assert result.failure.attempts == 1  # a handshake failure is not retried


async def test_unreadable_ca_is_a_tls_failure(start_ep: StartEP, tmp_path: Path) -> None:
    site = await start_ep()
    tls = TLS(ca=tmp_path / "missing.pem")
    async with Client() as client:
        result = await client.ask(Site("tls", site.address, tls), QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TLS
    assert "missing.pem" in result.failure.message
    assert result.failure.attempts == 0


async def test_mutual_tls_with_server_name(tls_fake_ep: FakeEP, certs: Certs) -> None:
    tls = TLS(ca=certs.cert, cert=certs.cert, key=certs.key, server_name="ep.test")
    async with Client() as client:
        result = await client.ask(Site("tls", tls_fake_ep.address, tls), QUERY, deadline=5)
    assert result.answer is not None, result.failure
    assert result.answer.yes


async def test_a_server_name_the_certificate_does_not_have_is_a_tls_failure(
    tls_fake_ep: FakeEP, certs: Certs
) -> None:
    tls = TLS(ca=certs.cert, cert=certs.cert, key=certs.key, server_name="wrong.example")
    async with Client() as client:
        result = await client.ask(Site("tls", tls_fake_ep.address, tls), QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TLS, result.failure
    assert result.failure.attempts == 1  # not retried: it would fail the same way


async def test_tls_without_client_cert_fails(tls_fake_ep: FakeEP, certs: Certs) -> None:
    tls = TLS(ca=certs.cert, server_name="ep.test")
    async with Client(retry=FAST_RETRY) as client:
        result = await client.ask(Site("tls", tls_fake_ep.address, tls), QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind in (FailureKind.TLS, FailureKind.UNREACHABLE)
    assert tls_fake_ep.peers == []


# --- one site, several replicas: calls spread over them ---------------------


async def _until_each_answered(client: Client, site: Site, replicas: Replicas) -> None:
    """Ask until every replica that is up has answered once: gRPC connects
    to the replicas one by one, and a call made before all are connected
    goes to those that are. At most 50 calls, at most 10 seconds."""
    async with asyncio.timeout(10):
        for _ in range(50):
            result = await client.ask(site, QUERY, deadline=5)
            assert result.answer is not None, result.failure
            if all(replicas.asks()):
                return
    raise AssertionError(f"not every replica was reached: {replicas.asks()}")


async def test_calls_to_a_list_of_replicas_go_round_robin(replicas: Replicas) -> None:
    site = Site("replicated", ",".join(replicas.addresses()))
    async with Client() as client:
        await _until_each_answered(client, site, replicas)
        before = replicas.asks()
        for _ in range(30):
            result = await client.ask(site, QUERY, deadline=5)
            assert result.answer is not None, result.failure
        after = replicas.asks()
        assert [a - b for a, b in zip(after, before, strict=True)] == [10, 10, 10]
        results = await asyncio.gather(*(client.ask(site, QUERY, deadline=5) for _ in range(60)))
        assert all(r.answer is not None for r in results)
        assert [a - b for a, b in zip(replicas.asks(), after, strict=True)] == [20, 20, 20]
        assert len(client.pool) == 1  # one channel for the site, one connection per replica


async def test_a_replica_that_is_down_is_skipped(replicas: Replicas, refused_address: str) -> None:
    first, second, _ = replicas.addresses()
    site = Site("replicated", f"{first},{refused_address},{second}")
    async with Client() as client:
        await asyncio.wait_for(_answered_by(client, site, replicas, [0, 1]), 10)
        before = replicas.asks()
        for _ in range(20):
            result = await client.ask(site, QUERY, deadline=5)
            assert result.answer is not None, result.failure
        assert [a - b for a, b in zip(replicas.asks(), before, strict=True)] == [10, 10, 0]


async def _answered_by(client: Client, site: Site, replicas: Replicas, which: list[int]) -> None:
    for _ in range(50):
        result = await client.ask(site, QUERY, deadline=5)
        assert result.answer is not None, result.failure
        if all(replicas.asks()[i] for i in which):
            return
    raise AssertionError(f"replicas {which} were not all reached: {replicas.asks()}")


async def test_a_replica_that_stops_is_skipped(replicas: Replicas) -> None:
    site = Site("replicated", ",".join(replicas.addresses()))
    async with Client() as client:
        await _until_each_answered(client, site, replicas)
        await replicas.running[2].shutdown(0)
        before = replicas.asks()
        for _ in range(20):
            result = await client.ask(site, QUERY, deadline=5)
            assert result.answer is not None, result.failure
        gained = [a - b for a, b in zip(replicas.asks(), before, strict=True)]
        assert gained[2] == 0
        assert sum(gained) == 20
        assert min(gained[:2]) >= 9  # the two left share the calls


async def test_names_in_a_list_are_looked_up(replicas: Replicas) -> None:
    ports = [server.port for server in replicas.running]
    site = Site("replicated", ",".join(f"localhost:{port}" for port in ports))
    async with Client() as client:
        await _until_each_answered(client, site, replicas)


async def test_a_dns_name_reaches_the_site(replicas: Replicas) -> None:
    site = Site("dns", f"dns:///localhost:{replicas.running[1].port}")
    async with Client() as client:
        for _ in range(3):
            result = await client.ask(site, QUERY, deadline=5)
            assert result.answer is not None, result.failure
    assert replicas.asks() == [0, 3, 0]


async def test_a_name_in_a_list_that_is_not_found_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    async with Client() as client:
        result = await client.ask(Site("x", "nowhere.test:1,127.0.0.1:2"), QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.UNREACHABLE
    assert "cannot look up 'nowhere.test'" in result.failure.message
    assert result.failure.attempts == 0
