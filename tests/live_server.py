"""A real EP on loopback serving fake plugins, and helpers to call it.

Shared by the tests that check a whole server's TLS, identities, policy,
limits and observability (tests/test_tls.py, test_identities.py,
test_policy.py, test_limits.py, test_observability.py). Not collected as
tests. Each of those files makes its ``start`` fixture from :func:`servers`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from fake_plugins.common import FakeSource, Offering
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ep_server import TaskQuery, hookimpl
from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import start_server
from ep_server.testing import build_settings

DOCKER = "uri://docker-container"
TOKEN = "alice-secret-token-0123456789abcdef"

#: ``await start(config, *plugins, channel_credentials=None, target_host="127.0.0.1")``
#: starts a server with ``plugins`` (named p0, p1, ...) and returns it with a stub.
Start = Callable[..., Awaitable[tuple[Any, pb_grpc.ExecutionPlannerServiceStub]]]


class Recorder:
    """Offers, and remembers who asked."""

    def __init__(self) -> None:
        self.identities = []
        self.offering = Offering("uri://docker-uws", DOCKER)

    @hookimpl
    def ep_claims(self):
        return self.offering.ep_claims()

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery):
        self.identities.append(query.identity)
        return await self.offering.ep_evaluate(query)


@asynccontextmanager
async def servers() -> AsyncIterator[Start]:
    """A ``start`` function for servers that are all stopped on leaving."""
    running = []

    async def run(config, *plugins, channel_credentials=None, target_host="127.0.0.1"):
        settings = build_settings(config)
        sources = [FakeSource(f"p{i}", p) for i, p in enumerate(plugins)]
        server = await start_server(settings, load_registry(settings, detect_host(), sources))
        address = f"{target_host}:{server.port}"
        if channel_credentials is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            channel = grpc.aio.secure_channel(address, channel_credentials)
        running.append((server, channel))
        return server, pb_grpc.ExecutionPlannerServiceStub(channel)

    try:
        yield run
    finally:
        for server, channel in running:
            await channel.close()
            await server.shutdown(0)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ``ErrorInfo`` among an error's details."""
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def ask(tasktype=DOCKER):
    return pb.AskRequest(tasktype=tasktype)


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def tokens_file(tmp_path: Path) -> Path:
    """A static tokens file: ``TOKEN`` is alice, of the astro group."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    path = tmp_path / "tokens.toml"
    path.write_text(f'[tokens.alice]\ntoken_sha256 = "{digest}"\ngroups = ["astro"]\n')
    return path
