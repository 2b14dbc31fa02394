"""The exposition of :class:`~ep_server.metrics.Metrics` is what prometheus_client's
own Counter, Histogram and Gauge objects give for the same recordings:
names, help texts, types, labels, bucket bounds, values, series order and
``_created`` series (whose timestamps alone may differ)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from ep_server.metrics import (
    BOOKING_EVENTS,
    DURATION_BUCKETS,
    PLUGIN_OUTCOMES,
    RESPONSE_WORDS,
    Metrics,
)


class Reference:
    """The EP's metrics as prometheus_client's own objects record them."""

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        self.rpc_count = Counter(
            "ep_rpc_requests", "RPCs handled, by method and gRPC status code.",
            ["method", "code"], registry=reg,
        )  # fmt: skip
        self.rpc_seconds = Histogram(
            "ep_rpc_duration_seconds", "Time to handle an RPC, by method.",
            ["method"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge("ep_rpc_in_flight", "RPCs being handled now.", registry=reg)
        self.plugin_count = Counter(
            "ep_plugin_evaluations",
            "Plugin evaluations, by plugin and outcome (yes, no, error, timeout).",
            ["plugin", "outcome"], registry=reg,
        )  # fmt: skip
        self.plugin_seconds = Histogram(
            "ep_plugin_evaluation_duration_seconds", "Time a plugin took to evaluate a task.",
            ["plugin"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.plugin_info = Gauge(
            "ep_plugin_info", "Plugins known to the server and their state (always 1).",
            ["plugin", "state"], registry=reg,
        )  # fmt: skip
        answers = Counter(
            "ep_ask_answers", "Ask verdicts, by response word.", ["responseword"], registry=reg
        )
        self.offers = Counter("ep_offers", "Offers made in Ask answers.", registry=reg)
        bookings = Counter(
            "ep_bookings", "Booking events (booked, cancelled, rejected, expired).",
            ["event"], registry=reg,
        )  # fmt: skip
        self.http_count = Counter(
            "ep_http_requests", "HTTP requests handled, by route and HTTP status.",
            ["route", "status"], registry=reg,
        )  # fmt: skip
        self.http_seconds = Histogram(
            "ep_http_request_duration_seconds", "Time to handle an HTTP request, by route.",
            ["route"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.answers = {w: answers.labels(responseword=w) for w in sorted(RESPONSE_WORDS)}
        self.bookings_of = {e: bookings.labels(event=e) for e in sorted(BOOKING_EVENTS)}
        self.plugins: set[str] = set()

    def rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpc_count.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def http(self, route: str, status: int, seconds: float) -> None:
        self.http_count.labels(route, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None:
        if outcome not in PLUGIN_OUTCOMES:
            raise ValueError(outcome)
        if plugin not in self.plugins:  # every outcome's series, at zero
            self.plugins.add(plugin)
            self.plugin_seconds.labels(plugin)
            for each in PLUGIN_OUTCOMES:
                self.plugin_count.labels(plugin, each)
        self.plugin_count.labels(plugin, outcome).inc()
        self.plugin_seconds.labels(plugin).observe(seconds)

    def answer(self, word: str, offers: int) -> None:
        if word not in RESPONSE_WORDS:
            raise ValueError(word)
        self.answers[word].inc()
        if offers:
            self.offers.inc(offers)

    def bookings(self, event: str, n: int = 1) -> None:
        if event not in BOOKING_EVENTS:
            raise ValueError(event)
        self.bookings_of[event].inc(n)

    def plugins_loaded(self, states: Mapping[str, str]) -> None:
        self.plugin_info.clear()
        for plugin, state in states.items():
            self.plugin_info.labels(plugin, state).set(1)


def exposition(registry: CollectorRegistry) -> list[tuple[Any, ...]]:
    """Both exposition formats, parsed; ``_created`` values left out."""
    families = [
        *parse_text(generate_latest(registry).decode()),
        *parse_openmetrics(openmetrics.generate_latest(registry).decode()),
    ]
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [
                (
                    sample.name,
                    sample.labels,
                    "created" if sample.name.endswith("_created") else sample.value,
                )
                for sample in family.samples
            ],
        )
        for family in families
    ]


# Durations as the server measures them: never negative, never NaN (which
# OpenMetrics refuses in a sum); +Inf and the bounds themselves included.
BOUNDS = [*DURATION_BUCKETS, 0.0]
SECONDS = (
    st.floats(min_value=0.0)
    | st.sampled_from(BOUNDS)
    | st.sampled_from([math.nextafter(b, math.inf) for b in BOUNDS])
    | st.sampled_from([math.nextafter(b, 0.0) for b in BOUNDS])
    | st.floats(min_value=0, max_value=12)
)
PLUGINS = st.sampled_from(["docker", "static", "jupyter"])
RECORDINGS = st.lists(
    st.one_of(
        st.tuples(
            st.just("rpc"),
            st.sampled_from(["Ask", "GetServiceInfo", "AcceptOffer"]),
            st.sampled_from(["OK", "INVALID_ARGUMENT", "CANCELLED"]),
            SECONDS,
        ),
        st.tuples(
            st.just("plugin"),
            PLUGINS,
            st.sampled_from([*sorted(PLUGIN_OUTCOMES), "maybe"]),
            SECONDS,
        ),
        st.tuples(st.just("answer"), st.sampled_from(["YES", "NO", "MAYBE"]), st.integers(-1, 9)),
        st.tuples(
            st.just("bookings"),
            st.sampled_from([*sorted(BOOKING_EVENTS), "lost"]),
            st.integers(-1, 3),
        ),
        st.tuples(
            st.just("http"),
            st.sampled_from(["POST /v1/ask", "GET /", "unmatched"]),
            st.sampled_from([200, 400, 404]),
            SECONDS,
        ),
        st.tuples(
            st.just("plugins_loaded"),
            st.dictionaries(PLUGINS, st.sampled_from(["loaded", "blocked", "failed"])),
        ),
        st.tuples(st.just("in_flight"), st.integers(0, 20)),
    ),
    max_size=40,
)


def outcome(record: Callable[..., None], *args: Any) -> str | None:
    try:
        record(*args)
    except ValueError:
        return "ValueError"
    return None


@settings(max_examples=300, deadline=None)
@given(recordings=RECORDINGS)
def test_the_exposition_is_prometheus_clients_for_the_same_recordings(
    recordings: list[tuple[Any, ...]],
) -> None:
    metrics, reference = Metrics(), Reference()
    in_flight = [0]
    metrics.count_in_flight(lambda: in_flight[0])
    for kind, *args in recordings:
        if kind == "in_flight":
            in_flight[0] = args[0]
            reference.in_flight.set(args[0])
            continue
        assert outcome(getattr(metrics, kind), *args) == outcome(getattr(reference, kind), *args)
    assert exposition(metrics.registry) == exposition(reference.registry)


def test_created_series_are_left_out_when_prometheus_client_leaves_them_out(
    monkeypatch: Any,
) -> None:
    from prometheus_client import metrics as prometheus_metrics

    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    metrics, reference = Metrics(), Reference()
    for each in (metrics, reference):
        each.rpc("Ask", "OK", 0.001)
        each.plugin("docker", "yes", 0.01)
        each.http("GET /", 200, 0.002)
    assert "_created" not in metrics.render().decode()
    assert exposition(metrics.registry) == exposition(reference.registry)


def test_a_histograms_count_is_its_last_bucket_whatever_it_was_given() -> None:
    metrics = Metrics()
    for seconds in (-1.0, 0.0, 0.0001, 10.0, 10.5, math.inf):
        metrics.rpc("Ask", "OK", seconds)
    get = metrics.registry.get_sample_value
    assert get("ep_rpc_duration_seconds_count", {"method": "Ask"}) == 6
    assert get("ep_rpc_duration_seconds_bucket", {"method": "Ask", "le": "+Inf"}) == 6
    assert get("ep_rpc_duration_seconds_bucket", {"method": "Ask", "le": "0.0001"}) == 3
    assert get("ep_rpc_duration_seconds_bucket", {"method": "Ask", "le": "10.0"}) == 4


def test_a_metric_name_already_in_a_shared_registry_is_refused() -> None:
    registry = CollectorRegistry()
    Counter("ep_offers", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="ep_offers"):
        Metrics(registry)
