"""The Prometheus metrics: values, exposition, and the /metrics HTTP endpoint."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from ep_server.errors import ResourceExhausted
from ep_server.metrics import BOOKING_EVENTS, PLUGIN_OUTCOMES, Metrics
from ep_server.pipeline import Call, CallPipeline

LOOPBACK = "127.0.0.1"
TIMEOUT = 5.0

METRIC_NAMES = [
    "ep_rpc_requests_total",
    "ep_rpc_duration_seconds",
    "ep_rpc_in_flight",
    "ep_plugin_evaluations_total",
    "ep_plugin_evaluation_duration_seconds",
    "ep_plugin_info",
    "ep_ask_answers_total",
    "ep_offers_total",
    "ep_bookings_total",
]


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, int]]:
    """A Metrics object serving /metrics on a free loopback port."""
    m = Metrics()
    port = await m.serve(LOOPBACK, 0)
    yield m, port
    await asyncio.to_thread(m.close)


@dataclass
class Inbound:
    """A call as a transport would hand it to the pipeline."""

    metadata: list[tuple[str, str]] = field(default_factory=list)
    request_id: str = ""
    transport: str = "test"

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    def peer_subject(self) -> str | None:
        return None

    def time_remaining(self) -> float | None:
        return None


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def fetch(port: int, accept: str | None = None) -> tuple[int, str, str]:
    """GET /metrics from the loopback port: (status, content type, body)."""
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


# -- recording ----------------------------------------------------------------


def test_rpc_counts_by_method_and_code(metrics: Metrics) -> None:
    metrics.rpc("Ask", "OK", 0.002)
    metrics.rpc("Ask", "OK", 0.004)
    metrics.rpc("Ask", "INVALID_ARGUMENT", 0.0001)
    metrics.rpc("GetServiceInfo", "OK", 0.0003)

    assert value(metrics, "ep_rpc_requests_total", method="Ask", code="OK") == 2
    assert value(metrics, "ep_rpc_requests_total", method="Ask", code="INVALID_ARGUMENT") == 1
    assert value(metrics, "ep_rpc_requests_total", method="GetServiceInfo", code="OK") == 1
    assert value(metrics, "ep_rpc_requests_total", method="GetServiceInfo", code="INTERNAL") is None


def test_rpc_duration_histogram(metrics: Metrics) -> None:
    for seconds in (0.00005, 0.002, 0.004, 20.0):
        metrics.rpc("Ask", "OK", seconds)

    assert value(metrics, "ep_rpc_duration_seconds_count", method="Ask") == 4
    assert value(metrics, "ep_rpc_duration_seconds_sum", method="Ask") == pytest.approx(20.00605)
    assert value(metrics, "ep_rpc_duration_seconds_bucket", method="Ask", le="0.0001") == 1
    assert value(metrics, "ep_rpc_duration_seconds_bucket", method="Ask", le="0.005") == 3
    assert value(metrics, "ep_rpc_duration_seconds_bucket", method="Ask", le="10.0") == 3
    assert value(metrics, "ep_rpc_duration_seconds_bucket", method="Ask", le="+Inf") == 4


def test_plugin_counts_and_duration(metrics: Metrics) -> None:
    metrics.plugin("docker", "yes", 0.01)
    metrics.plugin("docker", "no", 0.02)
    metrics.plugin("docker", "timeout", 5.0)
    metrics.plugin("static", "yes", 0.0002)

    assert value(metrics, "ep_plugin_evaluations_total", plugin="docker", outcome="yes") == 1
    assert value(metrics, "ep_plugin_evaluations_total", plugin="docker", outcome="timeout") == 1
    assert value(metrics, "ep_plugin_evaluation_duration_seconds_count", plugin="docker") == 3
    assert value(
        metrics, "ep_plugin_evaluation_duration_seconds_sum", plugin="docker"
    ) == pytest.approx(5.03)
    assert value(metrics, "ep_plugin_evaluation_duration_seconds_count", plugin="static") == 1


def test_plugin_error_and_timeout_series_start_at_zero(metrics: Metrics) -> None:
    metrics.plugin("static", "yes", 0.001)
    for outcome in PLUGIN_OUTCOMES - {"yes"}:
        assert value(metrics, "ep_plugin_evaluations_total", plugin="static", outcome=outcome) == 0


def test_plugin_unknown_outcome_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.plugin("static", "maybe", 0.001)
    assert value(metrics, "ep_plugin_evaluations_total", plugin="static", outcome="maybe") is None


def test_answers_and_offers(metrics: Metrics) -> None:
    assert value(metrics, "ep_ask_answers_total", responseword="YES") == 0
    assert value(metrics, "ep_ask_answers_total", responseword="NO") == 0
    assert value(metrics, "ep_offers_total") == 0

    metrics.answer("YES", 3)
    metrics.answer("YES", 1)
    metrics.answer("NO", 0)

    assert value(metrics, "ep_ask_answers_total", responseword="YES") == 2
    assert value(metrics, "ep_ask_answers_total", responseword="NO") == 1
    assert value(metrics, "ep_offers_total") == 4


def test_answer_unknown_word_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="response word"):
        metrics.answer("MAYBE", 0)


def test_bookings(metrics: Metrics) -> None:
    for event in BOOKING_EVENTS:
        assert value(metrics, "ep_bookings_total", event=event) == 0
    metrics.bookings("booked")
    metrics.bookings("expired", 3)
    assert value(metrics, "ep_bookings_total", event="booked") == 1
    assert value(metrics, "ep_bookings_total", event="expired") == 3
    with pytest.raises(ValueError, match="booking event"):
        metrics.bookings("lost")


def test_in_flight_is_the_sum_of_its_sources_read_at_each_scrape(metrics: Metrics) -> None:
    assert value(metrics, "ep_rpc_in_flight") == 0
    first, second = [0], [0]
    metrics.count_in_flight(lambda: first[0])
    metrics.count_in_flight(lambda: second[0])
    first[0], second[0] = 2, 3
    assert value(metrics, "ep_rpc_in_flight") == 5
    first[0] = 0
    assert value(metrics, "ep_rpc_in_flight") == 3


async def test_an_rpc_blocked_in_its_handler_is_in_flight_until_it_returns(
    metrics: Metrics,
) -> None:
    pipeline = CallPipeline(metrics=metrics)
    entered, release = asyncio.Event(), asyncio.Event()

    async def blocks(request: object, call: Call) -> None:
        entered.set()
        await release.wait()

    call = asyncio.ensure_future(pipeline.run("Ask", Inbound(), blocks, None))
    await entered.wait()
    assert "\nep_rpc_in_flight 1.0\n" in metrics.render().decode()
    release.set()
    await call
    assert "\nep_rpc_in_flight 0.0\n" in metrics.render().decode()
    assert value(metrics, "ep_rpc_requests_total", method="Ask", code="OK") == 1


async def test_the_pipelines_sharing_one_metrics_object_add_up(metrics: Metrics) -> None:
    grpc_door, http_door = CallPipeline(metrics=metrics), CallPipeline(metrics=metrics)
    release = asyncio.Event()

    async def blocks(request: object, call: Call) -> None:
        await release.wait()

    calls = [
        asyncio.ensure_future(pipeline.run("Ask", Inbound(), blocks, None))
        for pipeline in (grpc_door, http_door, http_door)
    ]
    await asyncio.sleep(0)
    assert value(metrics, "ep_rpc_in_flight") == 3
    release.set()
    await asyncio.gather(*calls)
    assert value(metrics, "ep_rpc_in_flight") == 0


async def test_a_call_refused_at_admission_leaves_in_flight_as_it_was(metrics: Metrics) -> None:
    pipeline = CallPipeline(metrics=metrics, max_concurrent=1)
    release = asyncio.Event()

    async def blocks(request: object, call: Call) -> None:
        await release.wait()

    first = asyncio.ensure_future(pipeline.run("Ask", Inbound(), blocks, None))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted):
        await pipeline.run("Ask", Inbound(), blocks, None)
    assert value(metrics, "ep_rpc_in_flight") == 1
    release.set()
    await first
    assert value(metrics, "ep_rpc_requests_total", method="Ask", code="RESOURCE_EXHAUSTED") == 1


def test_plugins_loaded_replaces_earlier_states(metrics: Metrics) -> None:
    metrics.plugins_loaded({"static": "loaded", "docker": "failed"})
    assert value(metrics, "ep_plugin_info", plugin="static", state="loaded") == 1
    assert value(metrics, "ep_plugin_info", plugin="docker", state="failed") == 1

    metrics.plugins_loaded({"static": "loaded", "docker": "blocked"})
    assert value(metrics, "ep_plugin_info", plugin="docker", state="blocked") == 1
    assert value(metrics, "ep_plugin_info", plugin="docker", state="failed") is None


# -- registries -------------------------------------------------------------------


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_render_names_every_metric(metrics: Metrics, name: str) -> None:
    metrics.rpc("Ask", "OK", 0.001)
    metrics.plugin("static", "yes", 0.001)
    metrics.plugins_loaded({"static": "loaded"})
    text = metrics.render().decode()
    assert f"\n{name}" in text or text.startswith(name)


def test_instances_do_not_interfere() -> None:
    first, second = Metrics(), Metrics()
    first.rpc("Ask", "OK", 0.001)
    first.answer("YES", 2)
    assert value(first, "ep_rpc_requests_total", method="Ask", code="OK") == 1
    assert value(second, "ep_rpc_requests_total", method="Ask", code="OK") is None
    assert value(second, "ep_offers_total") == 0
    assert first.registry is not second.registry


def test_default_registry_untouched(metrics: Metrics) -> None:
    metrics.rpc("Ask", "OK", 0.001)
    assert REGISTRY.get_sample_value("ep_offers_total") is None
    assert metrics.registry is not REGISTRY


def test_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.answer("NO", 0)
    assert m.registry is registry
    assert registry.get_sample_value("ep_ask_answers_total", {"responseword": "NO"}) == 1


# -- HTTP endpoint --------------------------------------------------------------------


async def test_serve_answers_get_metrics(served: tuple[Metrics, int]) -> None:
    m, port = served
    assert port > 0
    m.rpc("Ask", "OK", 0.001)

    status, content_type, body = await asyncio.to_thread(fetch, port)

    assert status == 200
    # The Prometheus text format (its version depends on prometheus-client's).
    assert content_type.startswith("text/plain; version=")
    assert 'ep_rpc_requests_total{code="OK",method="Ask"} 1.0' in body
    for name in ("ep_rpc_in_flight", "ep_offers_total", "ep_bookings_total"):
        assert name in body


async def test_serve_negotiates_openmetrics(served: tuple[Metrics, int]) -> None:
    _, port = served
    accept = "application/openmetrics-text; version=1.0.0"
    _, content_type, body = await asyncio.to_thread(fetch, port, accept)
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


async def test_two_servers_serve_their_own_metrics() -> None:
    first, second = Metrics(), Metrics()
    try:
        first_port = await first.serve(LOOPBACK, 0)
        second_port = await second.serve(LOOPBACK, 0)
        assert first_port != second_port
        first.answer("YES", 5)

        _, _, first_body = await asyncio.to_thread(fetch, first_port)
        _, _, second_body = await asyncio.to_thread(fetch, second_port)

        assert "ep_offers_total 5.0" in first_body
        assert "ep_offers_total 0.0" in second_body
    finally:
        await asyncio.to_thread(first.close)
        await asyncio.to_thread(second.close)


async def test_serve_twice_is_refused(served: tuple[Metrics, int]) -> None:
    m, _ = served
    with pytest.raises(RuntimeError, match="already running"):
        await m.serve(LOOPBACK, 0)


async def test_close_frees_the_port() -> None:
    m = Metrics()
    port = await m.serve(LOOPBACK, 0)
    await asyncio.to_thread(fetch, port)

    await asyncio.to_thread(m.close)

    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(fetch, port)
    # SO_REUSEADDR tolerates TIME_WAIT connections but not a live listener.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen()


async def test_serve_again_after_close() -> None:
    m = Metrics()
    try:
        await m.serve(LOOPBACK, 0)
        await asyncio.to_thread(m.close)
        port = await m.serve(LOOPBACK, 0)
        status, _, _ = await asyncio.to_thread(fetch, port)
        assert status == 200
    finally:
        await asyncio.to_thread(m.close)


def test_close_is_idempotent_and_safe_before_serve() -> None:
    m = Metrics()
    m.close()
    m.close()
