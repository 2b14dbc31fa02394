"""``[server] max_connection_age``: the server ends old client connections
with an HTTP/2 GOAWAY, and clients reconnect without losing a call.

The connections are watched through a TCP relay between the client and a
real server on 127.0.0.1: it counts the connections the client opens and
reads the HTTP/2 frames the server sends, so the GOAWAY is seen on the wire
rather than inferred from the channel's state.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ep_server.config import load_settings
from ep_server.errors import ConfigError
from ep_server.server import SERVICE_NAME, _options, start_server
from ep_server.testing import build_registry, build_settings

#: HTTP/2 frame type of GOAWAY (RFC 9113, section 6.8) and its NO_ERROR code.
GOAWAY, NO_ERROR = 0x7, 0x0
FRAME_HEADER = 9


class Relay:
    """Forwards TCP connections to ``127.0.0.1:target``, counting them and
    recording the error code of every GOAWAY frame the server sends."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.connections = 0
        self.goaways: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        for task in (
            asyncio.create_task(self._pump(client_r, server_w, watch=False)),
            asyncio.create_task(self._pump(server_r, client_w, watch=True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        # The server speaks first with frames (only the client sends the
        # connection preface), so its byte stream is a sequence of frames
        # from the first byte on.
        pending = b""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                if watch:
                    pending = self._frames(pending + data)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _frames(self, buffer: bytes) -> bytes:
        """Record the GOAWAYs among the complete frames in ``buffer``; return
        the incomplete rest."""
        while len(buffer) >= FRAME_HEADER:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < FRAME_HEADER + length:
                break
            payload = buffer[FRAME_HEADER : FRAME_HEADER + length]
            if buffer[3] == GOAWAY:
                self.goaways.append(int.from_bytes(payload[4:8], "big"))
            buffer = buffer[FRAME_HEADER + length :]
        return buffer


@pytest.fixture
async def relayed():
    """Start a server with the given ``[server]`` keys behind a relay;
    yields (relay, health stub through the relay)."""
    opened: list[object] = []

    async def start(**server: float):
        settings = build_settings(**server)
        running = await start_server(settings, build_registry(settings, entry_points=False))
        relay = Relay(running.port)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{await relay.start()}")
        opened.extend((running, relay, channel))
        return relay, health_pb2_grpc.HealthStub(channel)

    yield start
    if opened:
        running, relay, channel = opened
        await channel.close()
        await relay.close()
        await running.shutdown(0)


async def test_an_aged_connection_gets_goaway_and_the_client_reconnects(relayed):
    relay, health = await relayed(max_connection_age=0.3, max_connection_age_grace=1.0)
    answers = 0
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    # Calls keep going until the client has been sent away twice and has
    # come back on a third connection; each must be answered.
    async with asyncio.timeout(15):
        while relay.connections < 3:
            reply = await health.Check(request, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            answers += 1
            await asyncio.sleep(0.02)
    assert len(relay.goaways) >= 2
    assert set(relay.goaways) == {NO_ERROR}
    assert answers > 3


async def test_without_a_connection_age_the_connection_stays(relayed):
    relay, health = await relayed()
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    for _ in range(20):
        await health.Check(request, timeout=5)
        await asyncio.sleep(0.05)
    assert relay.connections == 1
    assert relay.goaways == []


def test_the_connection_age_reaches_grpc_in_milliseconds_and_zero_leaves_it_out():
    aged = dict(_options(build_settings(max_connection_age=300)))
    assert aged["grpc.max_connection_age_ms"] == 300_000
    assert "grpc.max_connection_age_grace_ms" not in aged
    graced = build_settings(max_connection_age=1.5, max_connection_age_grace=30)
    assert dict(_options(graced))["grpc.max_connection_age_grace_ms"] == 30_000
    default = dict(_options(load_settings(environ={})))
    assert not {"grpc.max_connection_age_ms", "grpc.max_connection_age_grace_ms"} & set(default)


@pytest.mark.parametrize("key", ["max_connection_age", "max_connection_age_grace"])
def test_a_negative_or_unrepresentable_connection_age_is_refused(key):
    for value in (-1, 10**7):
        with pytest.raises(ConfigError, match=f"server.{key}"):
            load_settings(environ={}, overrides={f"server.{key}": value})
