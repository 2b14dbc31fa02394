"""The service on a real grpc.aio server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import importlib.metadata

import grpc
import pytest
from fake_plugins.common import FakeSource, Offering, SlowAsync
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from ep_server.config import load_settings
from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import SERVICE_NAME, start_server
from ep_server.testing import build_settings

SEED = {"tasktype": "uri://docker-container", "taskinfo": {"image": "docker.io/example:1.0"}}


@pytest.fixture
async def serve():
    """Start servers; each is shut down after the test."""
    running = []

    async def start(settings, registry):
        running.append(await start_server(settings, registry))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running[-1].port}")
        running[-1].channel = channel
        return running[-1], channel

    yield start
    for server in running:
        await server.channel.close()
        await server.shutdown(0)


def builtin_plugins():
    """The built-in plugins' real entry points (those of ep-server itself)."""
    eps = importlib.metadata.entry_points(group="ep_server")
    return [ep for ep in eps if ep.dist and ep.dist.name == "ep-server"]


@pytest.fixture
async def default_ep(serve):
    """The server exactly as `ep-server serve` starts it with no config (only
    the built-in plugins, so installed third-party plugins do not interfere)."""
    settings = load_settings(
        environ={},
        overrides={
            "server.listen": "127.0.0.1:0",
            "http.listen": "127.0.0.1:0",  # not the default 8080, which may be taken
            "schedule.ledger": ":memory:",
        },
    )
    registry = load_registry(settings, detect_host(), builtin_plugins())
    _, channel = await serve(settings, registry)
    return pb_grpc.ExecutionPlannerServiceStub(channel)


@pytest.fixture
async def fake_ep(serve):
    settings = build_settings({"plugins": {"deadline": 0.3}})
    sources = [
        FakeSource("docker", Offering("uri://docker-uws", "uri://docker-container")),
        FakeSource("slow", SlowAsync("uri://slow", 30)),
        FakeSource("wait", SlowAsync("uri://wait", 0.2)),
    ]
    running, channel = await serve(settings, load_registry(settings, detect_host(), sources))
    return running, pb_grpc.ExecutionPlannerServiceStub(channel), channel


async def test_the_seed_example_gets_a_yes_with_the_default_config(default_ep):
    response = await default_ep.Ask(json_format.ParseDict(SEED, pb.AskRequest()))
    printed = json_format.MessageToDict(response)
    assert printed["responseword"] == "YES"
    assert printed["offers"][0]["servicetype"] == "uri://docker-uws"
    assert printed["offers"][0]["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}
    assert printed["offers"][0]["plugin"] == "static"


async def test_an_unknown_tasktype_is_a_no_not_an_error(default_ep):
    response = await default_ep.Ask(pb.AskRequest(tasktype="uri://jupyter-notebook"))
    assert response.responseword == pb.NO
    assert [r.code for r in response.reasons] == ["UNSUPPORTED_TASK_TYPE"]


async def test_service_info_describes_the_site(default_ep):
    info = await default_ep.GetServiceInfo(pb.GetServiceInfoRequest())
    assert [(t.tasktype, [s.servicetype for s in t.services]) for t in info.tasktypes] == [
        ("uri://docker-container", ["uri://docker-uws"])
    ]
    [plugin] = info.plugins
    assert (plugin.name, plugin.state, plugin.distribution) == (
        "static",
        pb.PLUGIN_STATE_LOADED,
        "ep-server",
    )
    assert info.capacity.cores >= 1
    assert info.capacity.memory > 0
    assert info.capacity.os
    assert info.server_version


def bad_request_fields(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status details"
    result = {}
    reasons = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.update({v.field: v.description for v in bad.field_violations})
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append((info.reason, info.domain))
    assert reasons == [("INVALID_ARGUMENT", SERVICE_NAME)]
    return result


def deep_taskinfo_request(depth: int) -> bytes:
    from request_generation.encoding import nested, taskinfo_field

    return pb.AskRequest(tasktype="uri://docker-container").SerializeToString() + taskinfo_field(
        nested(depth)
    )


BAD_REQUESTS = {
    "empty tasktype": (pb.AskRequest(), {"tasktype"}),
    "relative tasktype": (pb.AskRequest(tasktype="docker"), {"tasktype"}),
    "long tasktype": (pb.AskRequest(tasktype="uri://" + "x" * 3000), {"tasktype"}),
    "min above max": (
        json_format.ParseDict(
            {"tasktype": "uri://x", "resources": {"cores": {"min": 3, "max": 2}}}, pb.AskRequest()
        ),
        {"resources.cores"},
    ),
    "negative": (
        json_format.ParseDict(
            {"tasktype": "uri://x", "resources": {"memory": {"min": -5}}}, pb.AskRequest()
        ),
        {"resources.memory.min"},
    ),
    "all at once": (
        json_format.ParseDict(
            {"tasktype": "", "resources": {"cores": {"min": -1}, "memory": {"min": 2, "max": 1}}},
            pb.AskRequest(),
        ),
        {"tasktype", "resources.cores.min", "resources.memory"},
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
async def test_bad_requests_get_invalid_argument_naming_every_field(default_ep, case):
    request, fields = BAD_REQUESTS[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await default_ep.Ask(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request_fields(info.value)) == fields
    # ...and the server is unharmed.
    assert (
        await default_ep.Ask(json_format.ParseDict(SEED, pb.AskRequest()))
    ).responseword == pb.YES


async def raw_ask(channel, data: bytes):
    call = channel.unary_unary(
        f"/{SERVICE_NAME}/Ask",
        request_serializer=lambda b: b,
        response_deserializer=pb.AskResponse.FromString,
    )
    return await call(data, timeout=10)


@pytest.mark.parametrize("depth", [33, 40, 200])
async def test_deep_taskinfo_gets_invalid_argument_naming_taskinfo(serve, depth):
    settings = load_settings(
        environ={},
        overrides={
            "server.listen": "127.0.0.1:0",
            "http.listen": "127.0.0.1:0",  # not the default 8080, which may be taken
            "schedule.ledger": ":memory:",
        },
    )
    _, channel = await serve(settings, load_registry(settings, detect_host(), builtin_plugins()))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_ask(channel, deep_taskinfo_request(depth))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "taskinfo" in bad_request_fields(info.value)
    ok = await raw_ask(channel, json_format.ParseDict(SEED, pb.AskRequest()).SerializeToString())
    assert ok.responseword == pb.YES


async def test_an_oversize_taskinfo_gets_the_detailed_error(default_ep):
    request = json_format.ParseDict(SEED, pb.AskRequest())
    request.taskinfo.fields["padding"].string_value = "x" * (300 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await default_ep.Ask(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 262144" in bad_request_fields(info.value)["taskinfo"]


async def test_a_message_over_the_grpc_limit_is_refused_by_grpc(default_ep):
    request = json_format.ParseDict(SEED, pb.AskRequest())
    request.taskinfo.fields["padding"].string_value = "x" * (5 * 1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await default_ep.Ask(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        await default_ep.Ask(json_format.ParseDict(SEED, pb.AskRequest()))
    ).responseword == pb.YES


async def test_garbage_bytes_get_invalid_argument(serve):
    settings = build_settings()
    _, channel = await serve(settings, load_registry(settings, detect_host(), []))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_ask(channel, b"\x0a\xff\xff\xff\xff\x0f")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_slow_plugin_cannot_hold_the_ask_past_the_deadline(fake_ep):
    _, stub, _ = fake_ep
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await stub.Ask(pb.AskRequest(tasktype="uri://slow"), timeout=10)
    assert loop.time() - started < 2
    assert [r.code for r in response.reasons] == ["PLUGIN_TIMEOUT"]


async def test_the_callers_deadline_bounds_the_plugins(serve):
    settings = build_settings({"plugins": {"deadline": 30}})
    sources = [FakeSource("slow", SlowAsync("uri://slow", 30))]
    _, channel = await serve(settings, load_registry(settings, detect_host(), sources))
    stub = pb_grpc.ExecutionPlannerServiceStub(channel)
    # A verdict (with a timeout reason) comes back before the caller gives up.
    response = await stub.Ask(pb.AskRequest(tasktype="uri://slow"), timeout=0.5)
    assert [r.code for r in response.reasons] == ["PLUGIN_TIMEOUT"]


async def test_health_is_serving(fake_ep):
    _, _, channel = fake_ep
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(fake_ep):
    _, _, channel = fake_ep
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for reply in call:
        names = {s.name for s in reply.list_services_response.service}
        break
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_graceful_shutdown_lets_in_flight_calls_finish(fake_ep):
    running, stub, channel = fake_ep
    health = health_pb2_grpc.HealthStub(channel)
    in_flight = asyncio.ensure_future(stub.Ask(pb.AskRequest(tasktype="uri://wait"), timeout=10))
    await asyncio.sleep(0.05)  # let the call reach the server
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.ensure_future(running.shutdown(5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    response = await in_flight
    assert response.responseword == pb.YES
    await stopping
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(pb.AskRequest(tasktype="uri://wait"), timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_service_info_lists_failed_and_blocked_plugins(serve):
    settings = build_settings({"plugins": {"block": ["off"]}})
    sources = [
        FakeSource("broken", error=ImportError("No module named 'numpyy'")),
        FakeSource("off", Offering("uri://x", "uri://docker-container")),
        FakeSource("docker", Offering("uri://docker-uws", "uri://docker-container")),
    ]
    _, channel = await serve(settings, load_registry(settings, detect_host(), sources))
    info = await pb_grpc.ExecutionPlannerServiceStub(channel).GetServiceInfo(
        pb.GetServiceInfoRequest()
    )
    states = {p.name: (p.state, p.error) for p in info.plugins}
    assert states["broken"][0] == pb.PLUGIN_STATE_FAILED
    assert "numpyy" in states["broken"][1]
    assert states["off"] == (pb.PLUGIN_STATE_BLOCKED, "")
    assert states["docker"] == (pb.PLUGIN_STATE_LOADED, "")
    assert [p.tasktypes for p in info.plugins if p.name == "docker"] == [["uri://docker-container"]]
