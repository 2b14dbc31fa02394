"""The client's channels: one per target, and TLS as the caller sees it.

A channel is made once per address and TLS settings and reused for every
call to that target. TLS problems (a plaintext server, an unreadable CA, a
missing client certificate, a server name the certificate does not have)
end in a :class:`FailureKind.TLS` failure that is not retried, since the next
attempt would fail the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ep_server.client import TLS, Client, FailureKind, RetryPolicy, Site, TaskQuery

# Fixtures from conftest.py: start_ep (a real EP), fake_ep and tls_fake_ep
# (scripted EPs), certs.
StartEP = Callable[..., Awaitable[Site]]
FakeEP = Any
Certs = Any

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
