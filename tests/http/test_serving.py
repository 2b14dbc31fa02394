"""Starting and stopping the HTTP door: ``[http] enabled = false`` opens no
port; ``ep-server serve --http-listen`` opens it where told, and
``--workers 2`` share it (each worker answers on it); a graceful shutdown
lets an HTTP Ask in flight finish."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from http_site import DOCKER, SEED

from ep_server import Claim, Offer, Verdict, hookimpl
from ep_server.pb import execution_planner_pb2 as pb

TESTS = Path(__file__).parent.parent


async def test_a_disabled_http_door_opens_no_port(site):
    s = await site({"http": {"enabled": False}})
    assert s.running.http_port is None
    assert s.running.http is None
    answer = await s.stub.Ask(pb.AskRequest(tasktype=DOCKER), timeout=10)
    assert answer.responseword == pb.YES


class Gate:
    """Claims ``uri://slow``; says yes ``seconds`` after it is asked, and
    sets ``asked`` when asked."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked = asyncio.Event()

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim("uri://slow")]

    @hookimpl
    async def ep_evaluate(self) -> Verdict:
        self.asked.set()
        await asyncio.sleep(self.seconds)
        return Verdict.yes(Offer("uri://slow"))


async def test_an_http_ask_in_flight_finishes_during_a_graceful_shutdown(site):
    gate = Gate(0.5)
    s = await site({}, gate)
    asking = asyncio.ensure_future(s.post("/v1/ask", json={"tasktype": "uri://slow"}))
    await gate.asked.wait()
    await s.running.shutdown(5)
    reply = await asking
    assert (reply.status, reply.json["responseword"]) == (200, "YES")
    with pytest.raises(aiohttp.ClientConnectionError):  # and the door is closed
        await s.post("/v1/ask", json=SEED)


async def test_the_shutdown_s_grace_bounds_an_http_ask_in_flight(site):
    gate = Gate(1.5)
    s = await site({"server": {"grace_period": 30}, "plugins": {"deadline": 5}}, gate)
    asking = asyncio.ensure_future(s.post("/v1/ask", json={"tasktype": "uri://slow"}))
    await gate.asked.wait()
    started = time.monotonic()
    await s.running.shutdown(0.2)
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientError):  # cut off, not answered
        await asking


def post(port: int, body: dict[str, object]) -> tuple[int, dict[str, str], dict[str, object]]:
    """``POST /v1/ask`` on a fresh connection: status, headers, answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/ask",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), json.loads(response.read())


class Serving:
    """``ep-server serve`` as a process, with the ports its start-up lines name."""

    def __init__(self, *args: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(TESTS),
            "EP_SCHEDULE__ENABLED": "false",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ep_server", "serve", "--listen", "127.0.0.1:0", *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the start-up lines."""
        found: list[re.Match[str]] = []
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while len(found) < count and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                found.append(match)
        assert len(found) == count, "".join(self.lines)
        return found

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        return self.proc.returncode


@pytest.fixture
def serve() -> Iterator[type[Serving]]:
    started: list[Serving] = []

    class Started(Serving):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Started
    for process in started:
        if process.proc.poll() is None:
            process.stop()


HTTP_LINE = r"listening on 127\.0\.0\.1:(\d+); http: http://127\.0\.0\.1:(\d+)/"


def test_serve_opens_the_http_door_where_http_listen_says(serve):
    process = serve("--http-listen", "127.0.0.1:0")
    [match] = process.wait_for(HTTP_LINE)
    grpc_port, http_port = int(match[1]), int(match[2])
    assert http_port not in (0, grpc_port)
    status, _, answer = post(http_port, SEED)
    assert (status, answer["responseword"]) == (200, "YES")
    assert process.stop() == 0


def test_workers_share_the_http_port_and_each_answers_on_it(serve):
    process = serve("--workers", "2", "--http-listen", "127.0.0.1:0")
    matches = process.wait_for(HTTP_LINE, count=2)
    [http_port] = {int(m[2]) for m in matches}
    # A made-up request id starts with its process's own random prefix:
    # fresh connections spread over both workers show two prefixes.
    prefixes = set()
    for _ in range(30):
        status, headers, _ = post(http_port, SEED)
        assert status == 200
        prefixes.add(headers["x-request-id"][:16])
        if len(prefixes) == 2:
            break
    assert len(prefixes) == 2
    assert process.stop() == 0
