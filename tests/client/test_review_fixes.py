"""Client behaviour found wanting in review, kept fixed."""

from __future__ import annotations

import grpc
import pytest

from ep_server.client import Answer, Client, Failure, FailureKind, Site, TaskQuery
from ep_server.client.cli import main
from ep_server.pb import execution_planner_pb2 as pb

SERVICE = "ivoa.ep.v1.ExecutionPlannerService"


@pytest.fixture
async def future_ep():
    """An EP from a newer protocol: its verdict word is a value this client
    does not know (proto3 enums are open)."""

    async def ask(request: bytes, context: object) -> bytes:
        reply = pb.AskResponse()
        reply.offers.add(servicetype="uri://s")
        data = reply.SerializeToString()
        return b"\x08\x07" + data  # responseword = 7

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(ask)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Ask": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Site("future", f"127.0.0.1:{port}")
    await server.stop(0)


async def test_an_unreadable_reply_is_that_sites_failure_only(future_ep, start_ep):
    good = await start_ep("good")
    query = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})
    async with Client() as client:
        results = {
            r.site.name: r.outcome
            async for r in client.ask_many([future_ep, good], query, deadline=5)
        }
    assert isinstance(results["future"], Failure)
    assert results["future"].kind is FailureKind.CLIENT_ERROR
    assert isinstance(results["good"], Answer)


@pytest.mark.parametrize(
    "args",
    [
        ["--cores", "99999999999999999999999"],
        ["--memory", "99999999999999999999PiB"],
        ["--window", "now/+9000000d", "--duration", "1h"],
        ["--window", "now/+1h", "--duration", "999999999999d"],
        ["--deadline", "1e10"],
    ],
    ids=["cores", "memory", "window", "duration", "deadline"],
)
def test_absurd_numbers_are_usage_errors(args, capsys):
    argv = ["ask", "--tasktype", "uri://x", "--endpoint", "127.0.0.1:1", *args]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unreadable_files_and_tokens_are_usage_errors(tmp_path, capsys, monkeypatch):
    binary = tmp_path / "bad"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    base = ["ask", "--tasktype", "uri://x", "--deadline", "1"]
    assert main([*base, "--sites", str(binary)]) == 2
    assert main([*base, "--endpoint", "127.0.0.1:1", "--token-file", str(binary)]) == 2
    monkeypatch.setenv("EP_TOKEN", "caf\u00e9 token")
    assert main([*base, "--endpoint", "127.0.0.1:1"]) == 2
    assert "Traceback" not in capsys.readouterr().err
