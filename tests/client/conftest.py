"""Fixtures for the client tests: real EPs, a fake scripted EP, and endpoints
that hang or refuse. Loopback only."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from ep_server.client import Site
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.server import Running, start_server
from ep_server.testing import build_registry, build_settings

DOCKER = "uri://docker-container"
UWS = "uri://docker-uws"


def static_config(
    cores: int | None = 4, memory: str | None = None, **serviceinfo: Any
) -> dict[str, Any]:
    """An EP config whose only plugin is ``static``, offering docker-uws."""
    claim: dict[str, Any] = {"tasktype": DOCKER, "servicetype": UWS}
    claim["serviceinfo"] = serviceinfo or {"endpoint": "http://example.org/dkuws"}
    claim |= {k: v for k, v in (("cores", cores), ("memory", memory)) if v is not None}
    return {"plugins": {"allow": ["static"]}, "plugin": {"static": {"claims": [claim]}}}


StartEP = Callable[..., Awaitable[Site]]


@pytest.fixture
async def start_ep() -> AsyncIterator[StartEP]:
    """Start a real in-process EP on 127.0.0.1:0; ``await start_ep(name, cores=8)``."""
    running = []

    async def start(name: str = "ep", **config: Any) -> Site:
        settings = build_settings(static_config(**config))
        server = await start_server(settings, build_registry(settings))
        running.append(server)
        return Site(name, f"127.0.0.1:{server.port}")

    yield start
    for server in running:
        await server.shutdown(0)


@dataclass
class Replicas:
    """Real EPs on loopback, each counting the Asks it answered."""

    running: list[Running]

    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{server.port}" for server in self.running]

    def asks(self) -> list[int]:
        """Asks each replica answered OK, from its own metrics."""
        return [_asks(server) for server in self.running]


def _asks(server: Running) -> int:
    text = server.metrics.render().decode()
    match = re.search(r'^ep_rpc_requests_total\{code="OK",method="Ask"\} (\S+)$', text, re.M)
    return int(float(match[1])) if match else 0


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    """Three real EPs on loopback (one config), stopped after the test."""
    settings = build_settings(static_config())
    running = [await start_server(settings, build_registry(settings)) for _ in range(3)]
    yield Replicas(running)
    for server in running:
        await server.shutdown(0)


@pytest.fixture
async def silent_address() -> AsyncIterator[str]:
    """An endpoint that accepts TCP connections, reads, and never replies."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for writer in writers:
        writer.close()
    await server.wait_closed()


@pytest.fixture
def refused_address() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def unaccepting_address() -> Iterator[str]:
    """A listening socket that never accepts: the kernel completes the TCP
    handshake, nothing ever answers. Needs no event loop (for CLI tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class FakeEP:
    """A scripted EP: each Ask pops the next status code from ``script`` and
    fails with it; with the script empty it answers YES. Records each call's
    metadata and peer."""

    address: str = ""
    script: list[grpc.StatusCode] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)

    @property
    def site(self) -> Site:
        return Site("fake", self.address)

    async def ask(
        self, request: pb.AskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AskResponse:
        self.metadata.append(dict(context.invocation_metadata() or ()))
        self.peers.append(context.peer())
        if self.script:
            await context.abort(self.script.pop(0), "scripted failure")
        offer = pb.Offer(servicetype=UWS, plugin="fake")
        offer.serviceinfo.update({"endpoint": "http://fake/uws", "tasktype": request.tasktype})
        return pb.AskResponse(responseword=pb.YES, offers=[offer])

    def handler(self) -> grpc.GenericRpcHandler:
        ask = grpc.unary_unary_rpc_method_handler(
            self.ask,
            request_deserializer=pb.AskRequest.FromString,
            response_serializer=pb.AskResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "ivoa.ep.v1.ExecutionPlannerService", {"Ask": ask}
        )


async def _serve_fake(fake: FakeEP, credentials: grpc.ServerCredentials | None) -> grpc.aio.Server:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((fake.handler(),))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    fake.address = f"127.0.0.1:{port}"
    return server


@pytest.fixture
async def fake_ep() -> AsyncIterator[FakeEP]:
    """A plaintext :class:`FakeEP`."""
    fake = FakeEP()
    server = await _serve_fake(fake, None)
    yield fake
    await server.stop(0)


@dataclass(frozen=True)
class Certs:
    """A self-signed certificate for ``ep.test`` (also used as client cert and CA)."""

    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Made with the openssl command; the TLS tests skip without it."""
    folder = tmp_path_factory.mktemp("certs")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=ep.test", "-addext", "subjectAltName=DNS:ep.test",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a test certificate with openssl: {exc}")
    return Certs(cert, key)


@pytest.fixture
async def tls_fake_ep(certs: Certs) -> AsyncIterator[FakeEP]:
    """A :class:`FakeEP` over mutual TLS: it presents ``certs`` and requires
    a client certificate signed by it."""
    pair = (certs.key.read_bytes(), certs.cert.read_bytes())
    credentials = grpc.ssl_server_credentials(
        [pair], root_certificates=certs.cert.read_bytes(), require_client_auth=True
    )
    fake = FakeEP()
    server = await _serve_fake(fake, credentials)
    yield fake
    await server.stop(0)


@pytest.fixture
def thread_ep(ep_server: Callable[..., Any]) -> Callable[..., str]:
    """Start a real EP on its own thread and loop (for code that runs
    ``asyncio.run``, like the CLI); ``thread_ep(cores=8)`` gives its address.
    ``ep_server`` is ep-server's own pytest fixture (ep_server.testing)."""

    def start(**config: Any) -> str:
        address: str = ep_server(config=static_config(**config)).address
        return address

    return start


@pytest.fixture
def thread_ep_server(ep_server: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`thread_ep`'s server itself (an ``EPTestServer``): its
    ``address`` for gRPC and its ``http_url`` for the note's interface."""

    def start(**config: Any) -> Any:
        return ep_server(config=static_config(**config))

    return start
