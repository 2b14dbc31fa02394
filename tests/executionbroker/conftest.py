"""A real EP with the docker and jupyter plugins, a booking ledger and two
callers (alice and bob, with tokens), and a client of its HTTP door that
speaks the ExecutionBroker draft's routes in YAML or JSON.

The server's clock is the tests' (:class:`schedule.rpc_site.Clock`, from
``T0``); both doors serve from the one ledger.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from schedule.rpc_site import T0, TOKENS, Clock, tokens_file

from ep_server.model import HostInfo
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import Running, start_server
from ep_server.testing import build_settings

HOST = HostInfo(cores=16, memory=64 * 2**30, architecture="x86_64", os="linux")
UPDATE = "uri:enum-value-update"


@dataclass
class Reply:
    """An HTTP answer: its status, headers and body (read as its type says)."""

    status: int
    headers: Mapping[str, str]
    text: str
    data: Any


@dataclass
class Broker:
    """A running EP: its HTTP base URL, a gRPC stub, and the clock."""

    base: str
    stub: pb_grpc.ExecutionPlannerServiceStub
    clock: Clock
    running: Running
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str | None = "alice",
        form: str = "yaml",
        accept: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request: ``body`` written as ``form`` (yaml or json), the
        answer asked for in ``accept`` (the form's type by default; "" sends
        no Accept header)."""
        sent = dict(headers or {})
        if user is not None:
            sent["Authorization"] = f"Bearer {TOKENS[user]}"
        kind = "application/json" if form == "json" else "application/yaml"
        if accept is None:
            accept = kind
        if accept:
            sent["Accept"] = accept
        data: bytes | None = None
        if body is not None:
            if isinstance(body, bytes | str):
                data = body.encode() if isinstance(body, str) else body
            else:
                data = (json.dumps(body) if form == "json" else yaml.safe_dump(body)).encode()
            sent.setdefault("Content-Type", kind)
        async with self.session.request(
            method, self.base + path, data=data, headers=sent, allow_redirects=False
        ) as response:
            text = await response.text()
            ctype = response.content_type
            parsed: Any = None
            if text and ctype == "application/json":
                parsed = json.loads(text)
            elif text and ctype == "application/yaml":
                parsed = yaml.safe_load(text)
            return Reply(response.status, response.headers, text, parsed)

    async def offerset(self, request: Any, **kwargs: Any) -> Reply:
        """POST /offersets, then the offer set it redirects to (checked equal)."""
        posted = await self.call("POST", "/offersets", request, **kwargs)
        assert posted.status == 303, posted.text
        read = await self.call("GET", posted.headers["Location"], **_reading(kwargs))
        assert read.status == 200, read.text
        assert read.data == posted.data
        return read

    async def update(self, session: Mapping[str, Any], value: str, **kwargs: Any) -> Reply:
        """POST the draft's update of the session's state."""
        body = {"update": {"type": UPDATE, "path": "state", "value": value}}
        return await self.call("POST", f"/sessions/{session['uuid']}", body, **kwargs)


def _reading(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k in ("user", "form", "accept")}


def docker_request(cores: int = 2, hours: int = 2, window: str = "PT6H", at: str = "") -> dict:
    """An OfferSetRequest in the draft's form: a docker container, cores, a
    start window from ``at`` (T0 by default)."""
    start = at or T0.isoformat().replace("+00:00", "Z")
    return {
        "name": "test-session",
        "executable": {
            "type": "https://www.purl.org/ivoa.net/EB/schema/types/executables/docker-container-1.0.yaml",
            "image": {"locations": ["ghcr.io/ivoa/oligia-webtop:ubuntu-2022.01.13"]},
        },
        "resources": {"compute": [{"cores": {"requested": {"min": cores, "max": cores}}}]},
        "schedule": {"requested": {"duration": f"PT{hours}H", "start": [f"{start}/{window}"]}},
    }


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Broker]]]:
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(clock: Clock | None = None, **schedule: Any) -> Broker:
        """An EP; ``schedule`` keys override ``[schedule]``'s, ``clock``
        is shared with another EP's (replicas of one site)."""
        config = {
            "auth": {"tokens_file": str(tokens_file(tmp_path))},
            "schedule": {"pools": {"cores": 8, "memory": "16GiB"}, **schedule},
        }
        settings = build_settings(config)
        clock = clock or Clock()
        running = await start_server(settings, load_registry(settings, HOST), clock)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        session = aiohttp.ClientSession()

        async def stop() -> None:
            await session.close()
            await channel.close()
            await running.shutdown(0)

        stops.append(stop)
        stub = pb_grpc.ExecutionPlannerServiceStub(channel)
        return Broker(f"http://127.0.0.1:{running.http_port}", stub, clock, running, session)

    yield start
    for stop in stops:
        await stop()
