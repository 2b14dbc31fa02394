"""HAProxy for the cluster: the gRPC health check written out in HTTP/2,
its configuration, and real HAProxy balancing and checking real EPs.

HAProxy is installed with apt-get when missing, as ``make cluster`` does;
where it cannot be, these tests fail saying why.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.server import Running, start_server
from ep_server.testing import build_registry, build_settings
from tools.cluster import haproxy
from tools.cluster.processes import Child, free_ports

CLAIM = {"tasktype": "uri://docker-container", "servicetype": "uri://docker-uws"}
CONFIG = {"plugins": {"allow": ["static"]}, "plugin": {"static": {"claims": [CLAIM]}}}


@pytest.fixture
async def eps() -> AsyncIterator[list[Running]]:
    """Two real EPs on loopback."""
    settings = build_settings(CONFIG)
    running = [await start_server(settings, build_registry(settings)) for _ in range(2)]
    yield running
    for server in running:
        await server.shutdown(0)


async def _exchange(port: int, request: bytes, seconds: float = 5.0) -> bytes:
    """Send ``request`` on a new connection; read until the answer's last
    HEADERS frame has come (at most ``seconds``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(request)
        async with asyncio.timeout(seconds):
            for _ in range(1000):
                chunk = await reader.read(65536)
                received += chunk
                if not chunk or haproxy.TRAILERS in received:
                    break
    finally:
        writer.close()
    return received


async def test_the_written_out_request_asks_a_real_server(eps: list[Running]) -> None:
    answer = await _exchange(eps[0].port, haproxy.health_request())
    assert haproxy.TRAILERS in answer
    assert haproxy.SERVING_MESSAGE in answer


async def test_not_serving_and_unknown_services_give_no_serving_message(
    eps: list[Running],
) -> None:
    await eps[0].health.set(haproxy.SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    answer = await _exchange(eps[0].port, haproxy.health_request())
    assert haproxy.TRAILERS in answer
    assert haproxy.SERVING_MESSAGE not in answer
    answer = await _exchange(eps[1].port, haproxy.health_request("no.such.Service"))
    assert haproxy.TRAILERS in answer  # NOT_FOUND, in trailers only
    assert haproxy.SERVING_MESSAGE not in answer


def test_the_health_request_is_the_one_in_the_config() -> None:
    text = haproxy.config("127.0.0.1:8080", [("a", "127.0.0.1:1"), ("b", "[::1]:2")], "/x.sock")
    assert f"tcp-check send-binary {haproxy.health_request().hex()} " in text
    assert "bind 127.0.0.1:8080 proto h2" in text
    assert "    server a 127.0.0.1:1 proto h2 check\n" in text
    assert "    server b [::1]:2 proto h2 check\n" in text


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The haproxy program, installed when missing (a failure says why)."""
    return haproxy.ensure_haproxy(tmp_path_factory.mktemp("apt") / "apt-get.log")


def test_haproxy_accepts_the_config(binary: str, tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    servers = [("a", "127.0.0.1:1"), ("b", "[::1]:2")]
    config.write_text(haproxy.config("127.0.0.1:8080", servers, str(tmp_path / "s.sock")))
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.fullmatch(r"2\.\d+\.\d+.*", haproxy.version(binary))


async def _states(stats: Path, wanted: dict[str, tuple[str, str]], seconds: float = 15.0) -> None:
    """Wait (at most ``seconds``) until HAProxy reports ``wanted``."""
    states: dict[str, tuple[str, str]] = {}
    for _ in range(int(seconds / 0.1)):
        try:
            states = haproxy.server_states(stats)
        except OSError:
            states = {}
        if states == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"HAProxy reports {states}, not {wanted}")


@pytest.fixture
async def balancer(
    binary: str, eps: list[Running], tmp_path: Path
) -> AsyncIterator[tuple[int, Path]]:
    """HAProxy in front of the two EPs, checking once every 200 ms."""
    port = free_ports(1)[0]
    stats = tmp_path / "haproxy.sock"
    named = [(f"ep{i}", f"127.0.0.1:{server.port}") for i, server in enumerate(eps)]
    config = tmp_path / "haproxy.cfg"
    text = haproxy.config(f"127.0.0.1:{port}", named, str(stats), check_interval="200ms")
    config.write_text(text)
    child = Child("haproxy", [binary, "-db", "-f", str(config)], tmp_path / "haproxy.log")
    try:
        await _states(stats, {"ep0": ("UP", "L7OK"), "ep1": ("UP", "L7OK")})
        yield port, stats
    finally:
        child.stop(timeout=5)


async def test_calls_on_one_connection_are_spread(
    balancer: tuple[int, Path], eps: list[Running]
) -> None:
    port, _ = balancer
    request = pb.AskRequest(tasktype="uri://docker-container")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ExecutionPlannerServiceStub(channel)
        for _ in range(20):
            answer = await stub.Ask(request, timeout=5)
            assert answer.responseword == pb.YES
    assert [_asks(server) for server in eps] == [10, 10]


def _asks(server: Running) -> int:
    text = server.metrics.render().decode()
    match = re.search(r'^ep_rpc_requests_total\{code="OK",method="Ask"\} (\S+)$', text, re.M)
    return int(float(match[1])) if match else 0


async def test_a_replica_not_serving_is_taken_out_and_back(
    balancer: tuple[int, Path], eps: list[Running]
) -> None:
    _, stats = balancer
    await eps[1].health.set(haproxy.SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    await _states(stats, {"ep0": ("UP", "L7OK"), "ep1": ("DOWN", "L7RSP")})
    await eps[1].health.set(haproxy.SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await _states(stats, {"ep0": ("UP", "L7OK"), "ep1": ("UP", "L7OK")})
