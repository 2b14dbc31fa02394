"""A real EP in this process with its HTTP door open, and helpers to call
it over HTTP and over gRPC.

Shared by the tests of the HTTP door (tests/http/), whose ``site`` and
``booking_site`` fixtures are made from :func:`sites`. Not collected as
tests."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import aiohttp
import grpc
from fake_plugins.common import FakeSource, Offering
from multidict import CIMultiDictProxy
from schedule.rpc_site import TOKENS, Clock, tokens_file

from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import Running, start_server
from ep_server.testing import build_settings

DOCKER = "uri://docker-container"
#: The seed's question, as the README asks it.
SEED = {"tasktype": DOCKER, "taskinfo": {"image": "docker.io/example:1.0"}}


@dataclass
class Reply:
    """An HTTP response, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @cached_property
    def json(self) -> Any:
        return json.loads(self.body)

    def violations(self) -> dict[str, str]:
        """Field -> description of the BadRequest among a Status's details."""
        found = {}
        for detail in self.json.get("details", []):
            if detail["@type"].endswith("google.rpc.BadRequest"):
                found.update(
                    {v.get("field", ""): v["description"] for v in detail["field_violations"]}
                )
        return found

    def reason(self) -> str | None:
        """The ErrorInfo reason among a Status's details."""
        for detail in self.json.get("details", []):
            if detail["@type"].endswith("google.rpc.ErrorInfo"):
                return str(detail["reason"])
        return None


@dataclass
class Site:
    """A started server, with a gRPC stub and an HTTP client for it."""

    running: Running
    channel: grpc.aio.Channel
    stub: pb_grpc.ExecutionPlannerServiceStub
    session: aiohttp.ClientSession
    url: str
    #: The TLS context of HTTPS requests (None for plain HTTP).
    ssl: ssl.SSLContext | None = None
    plugins: tuple[Any, ...] = field(default_factory=tuple)
    clock: Clock | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        """``method path`` on the HTTP door; ``user`` sends that caller's
        bearer token (``schedule.rpc_site.TOKENS``)."""
        sent = dict(headers or {})
        if user is not None:
            sent["Authorization"] = f"Bearer {TOKENS.get(user, user)}"
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        async with self.session.request(method, self.url + path, headers=sent, **kwargs) as r:
            return Reply(r.status, r.headers, await r.read())

    def get(self, path: str, **kwargs: Any) -> Awaitable[Reply]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Awaitable[Reply]:
        return self.request("POST", path, **kwargs)


#: ``await site(config, *plugins, clock=None, channel_credentials=None,
#: ssl=None)``: a started :class:`Site` serving
#: ``plugins`` (named p0, p1...; by default one offering
#: ``uri://docker-uws`` for the docker task type).
StartSite = Callable[..., Awaitable[Site]]


@asynccontextmanager
async def sites() -> AsyncIterator[StartSite]:
    """A ``start`` function for sites that are all stopped on leaving."""
    started: list[Site] = []

    async def start(
        config: dict[str, Any] | None = None,
        *plugins: Any,
        clock: Clock | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> Site:
        plugins = plugins or (Offering("uri://docker-uws", DOCKER),)
        settings = build_settings(config)
        sources = [FakeSource(f"p{i}", p) for i, p in enumerate(plugins)]
        registry = load_registry(settings, detect_host(), sources)
        running = await start_server(settings, registry, clock)
        address = f"127.0.0.1:{running.port}"
        channel = (
            grpc.aio.insecure_channel(address)
            if channel_credentials is None
            else grpc.aio.secure_channel(address, channel_credentials)
        )
        scheme = "https" if ssl is not None else "http"
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        made = Site(
            running,
            channel,
            pb_grpc.ExecutionPlannerServiceStub(channel),
            session,
            f"{scheme}://127.0.0.1:{running.http_port}",
            ssl,
            plugins,
            clock,
        )
        started.append(made)
        return made

    try:
        yield start
    finally:
        for made in started:
            await made.session.close()
            await made.channel.close()
            await made.running.shutdown(0)


def booking_config(tmp_path: Any) -> dict[str, Any]:
    """A site that books: alice's and bob's tokens, 8 cores and 16 GiB."""
    return {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "schedule": {"ledger": ":memory:", "pools": {"cores": 8, "memory": "16GiB"}},
    }
