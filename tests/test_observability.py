"""Observability on a real server: request ids, JSON logs, Prometheus
metrics and OpenTelemetry spans.

Every call gets an ``x-request-id`` back (the caller's own, when it sent one,
also on errors); JSON log lines carry it; metrics are served on their own
port; with tracing enabled, each RPC is a span.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from live_server import DOCKER, Recorder, Start, ask, servers

from ep_server.logs import JsonFormatter, RequestIdFilter
from ep_server.pb import execution_planner_pb2 as pb


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as run:
        yield run


async def test_every_call_gets_a_request_id_back(start):
    _, stub = await start({}, Recorder())
    call = stub.Ask(ask(), timeout=10)
    await call
    trailer = dict(await call.trailing_metadata())
    assert len(trailer["x-request-id"]) == 32
    call = stub.Ask(ask(), metadata=(("x-request-id", "trace-123"),), timeout=10)
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == "trace-123"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(pb.AskRequest(tasktype="bad"), metadata=(("x-request-id", "e-1"),))
    assert dict(info.value.trailing_metadata())["x-request-id"] == "e-1"


async def test_json_logs_carry_the_request_id(start):
    from fake_plugins.common import Raising

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        _, stub = await start({}, Raising(DOCKER))
        call = stub.Ask(ask(), metadata=(("x-request-id", "find-me-42"),), timeout=10)
        await call
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failures = [e for e in lines if "raised" in e["message"]]
    assert failures
    assert failures[0]["request_id"] == "find-me-42"
    assert "plugin bug" in failures[0]["exception"]


async def test_prometheus_metrics_on_their_own_port(start):
    server, stub = await start({"metrics": {"listen": "127.0.0.1:0"}}, Recorder())
    await stub.Ask(ask(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Ask(pb.AskRequest(tasktype="bad"), timeout=10)
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'ep_rpc_requests_total{code="OK",method="Ask"} 1.0' in text
    assert 'ep_rpc_requests_total{code="INVALID_ARGUMENT",method="Ask"} 1.0' in text
    assert 'ep_plugin_evaluations_total{outcome="yes",plugin="p0"} 1.0' in text
    assert 'ep_ask_answers_total{responseword="YES"} 1.0' in text
    assert "ep_rpc_duration_seconds_bucket" in text


async def test_opentelemetry_spans_when_tracing_is_enabled(start):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _, stub = await start({"tracing": {"enabled": True}}, Recorder())
    await stub.Ask(ask(), timeout=10)
    names = [span.name for span in exporter.get_finished_spans()]
    assert "/ivoa.ep.v1.ExecutionPlannerService/Ask" in names
