"""Prometheus metrics for the EP, exposed on a separate HTTP port.

Every metric lives in one :class:`~prometheus_client.CollectorRegistry` owned by
a :class:`Metrics` object, never in the process-wide default registry, so that
several servers in one process (as in the tests) keep separate counts.

Metric names::

    ep_rpc_requests_total{method,code}                  counter
    ep_rpc_duration_seconds{method}                     histogram
    ep_rpc_in_flight                                    gauge
    ep_plugin_evaluations_total{plugin,outcome}         counter
    ep_plugin_evaluation_duration_seconds{plugin}       histogram
    ep_plugin_info{plugin,state}                        gauge, always 1
    ep_ask_answers_total{responseword}                  counter
    ep_offers_total                                     counter
    ep_bookings_total{event}                            counter
    ep_http_requests_total{route,status}                counter
    ep_http_request_duration_seconds{route}             histogram

Label cardinality is bounded by the caller's contract, because every label
value becomes a time series that lives as long as the process:

- ``method`` is an RPC name of the service (``Ask``, ``GetServiceInfo``...),
  a fixed set known to the server; never a value taken from a request.
- ``code`` is a gRPC status name (``OK``, ``INVALID_ARGUMENT``...), at most 17.
- ``plugin`` is the name of a plugin in the server's registry, fixed at start.
- ``route`` is an HTTP route's template as the server defines it
  (``POST /v1/ask``, ``GET /``), or ``unmatched``; ``status`` an HTTP
  status code. An HTTP call to an RPC counts in both the ``ep_rpc_*`` and
  the ``ep_http_*`` metrics.
- ``outcome``, ``responseword``, ``event`` and ``state`` come from small fixed
  sets; the first three are checked here and an unknown value raises
  :class:`ValueError` (a programming error, not a runtime condition).

The recording methods are on the hot path (once per RPC and once per plugin
evaluation), so the labelled children are looked up once per label set and
then cached in plain dicts; a call costs a dict lookup plus the
prometheus_client increments.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

__all__ = [
    "BOOKING_EVENTS",
    "DURATION_BUCKETS",
    "PLUGIN_OUTCOMES",
    "RESPONSE_WORDS",
    "Metrics",
]

#: Latency buckets in seconds, from 100 µs (a cached answer) to 10 s (a slow
#: plugin at its timeout); roughly three per decade.
DURATION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip

#: The outcomes of one plugin evaluation.
PLUGIN_OUTCOMES: Final = frozenset({"yes", "no", "error", "timeout"})
#: The verdicts of an ``Ask``.
RESPONSE_WORDS: Final = frozenset({"YES", "NO"})
#: What can happen to a booking.
BOOKING_EVENTS: Final = frozenset({"booked", "cancelled", "rejected", "expired"})

# How long close() waits for the HTTP server's thread to finish.
_JOIN_TIMEOUT = 5.0
# How often close() wakes the server's poll loop while it shuts down.
_WAKE_INTERVAL = 0.01
# Where to connect to reach a server bound to all addresses.
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class _InFlight:
    """A reusable context manager that counts the blocks currently inside it."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._gauge.dec()


def _stop(httpd: WSGIServer) -> None:
    """Shut the HTTP server down and close its socket, without waiting out its poll.

    ``shutdown()`` only takes effect when the server's select() returns, which
    on an idle server is after its 0.5 s poll interval; so connect to it while
    a helper thread waits in ``shutdown()``. If the connect fails, this just
    takes the poll interval.
    """
    stopper = threading.Thread(target=httpd.shutdown, name="ep-metrics-stop", daemon=True)
    stopper.start()
    deadline = time.monotonic() + _JOIN_TIMEOUT
    while stopper.is_alive() and time.monotonic() < deadline:
        _wake(httpd.socket.getsockname())
        stopper.join(_WAKE_INTERVAL)
    httpd.server_close()


def _wake(address: tuple[str, int] | tuple[str, int, int, int]) -> None:
    """Open and close a connection to a bound socket address, ignoring failure."""
    host = _WILDCARDS.get(address[0], address[0])
    with contextlib.suppress(OSError), socket.create_connection((host, address[1]), _WAKE_INTERVAL):
        pass


def _check(kind: str, value: str, allowed: frozenset[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {sorted(allowed)}")


class Metrics:
    """All EP metrics in one CollectorRegistry of its own.

    Pass ``registry`` to share one with other collectors; by default a fresh
    registry is made, never the global default one, so that several servers
    in one process do not clash.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._define_rpc_metrics()
        self._define_plugin_metrics()
        self._define_business_metrics()
        self._define_http_metrics()

    # -- definitions ------------------------------------------------------

    def _define_rpc_metrics(self) -> None:
        """Create the per-RPC metrics and their child caches."""
        reg = self.registry
        self._rpc_count = Counter(
            "ep_rpc_requests", "RPCs handled, by method and gRPC status code.",
            ["method", "code"], registry=reg,
        )  # fmt: skip
        self._rpc_seconds = Histogram(
            "ep_rpc_duration_seconds", "Time to handle an RPC, by method.",
            ["method"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        in_flight = Gauge("ep_rpc_in_flight", "RPCs being handled now.", registry=reg)
        self._in_flight = _InFlight(in_flight)
        self._rpc_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def _define_plugin_metrics(self) -> None:
        """Create the per-plugin metrics and their child caches."""
        reg = self.registry
        self._plugin_count = Counter(
            "ep_plugin_evaluations",
            "Plugin evaluations, by plugin and outcome (yes, no, error, timeout).",
            ["plugin", "outcome"], registry=reg,
        )  # fmt: skip
        self._plugin_seconds = Histogram(
            "ep_plugin_evaluation_duration_seconds", "Time a plugin took to evaluate a task.",
            ["plugin"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self._plugin_info = Gauge(
            "ep_plugin_info", "Plugins known to the server and their state (always 1).",
            ["plugin", "state"], registry=reg,
        )  # fmt: skip
        self._plugin_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def _define_business_metrics(self) -> None:
        """Create the answer, offer and booking counters, all series at zero."""
        reg = self.registry
        answers = Counter(
            "ep_ask_answers", "Ask verdicts, by response word.", ["responseword"], registry=reg
        )
        self._offers = Counter("ep_offers", "Offers made in Ask answers.", registry=reg)
        bookings = Counter(
            "ep_bookings", "Booking events (booked, cancelled, rejected, expired).",
            ["event"], registry=reg,
        )  # fmt: skip
        # Every series exists from the start, so rate() and alerts see zeros.
        self._answers = {w: answers.labels(responseword=w) for w in sorted(RESPONSE_WORDS)}
        self._bookings = {e: bookings.labels(event=e) for e in sorted(BOOKING_EVENTS)}

    def _define_http_metrics(self) -> None:
        """Create the per-route HTTP metrics and their child cache."""
        reg = self.registry
        self._http_count = Counter(
            "ep_http_requests", "HTTP requests handled, by route and HTTP status.",
            ["route", "status"], registry=reg,
        )  # fmt: skip
        self._http_seconds = Histogram(
            "ep_http_request_duration_seconds", "Time to handle an HTTP request, by route.",
            ["route"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self._http_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    # -- recording (hot path) ----------------------------------------------

    def http(self, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request and observe its duration; ``route`` is a
        template the server defines (never a path a client sent)."""
        try:
            count, seconds_hist = self._http_children[route, status]
        except KeyError:
            count, seconds_hist = self._http_children.setdefault(
                (route, status),
                (self._http_count.labels(route, str(status)), self._http_seconds.labels(route)),
            )
        count.inc()
        seconds_hist.observe(seconds)

    def rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and observe its duration.

        ``method`` must come from the service's fixed set of RPC names and
        ``code`` be a gRPC status name such as ``"OK"``.
        """
        try:
            count, seconds_hist = self._rpc_children[method, code]
        except KeyError:
            count, seconds_hist = self._rpc_children.setdefault(
                (method, code), self._rpc_child(method, code)
            )
        count.inc()
        seconds_hist.observe(seconds)

    def _rpc_child(self, method: str, code: str) -> tuple[Counter, Histogram]:
        """The labelled children for one (method, code) pair."""
        return self._rpc_count.labels(method, code), self._rpc_seconds.labels(method)

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None:
        """Count one plugin evaluation and observe its duration.

        ``outcome`` is one of ``yes``, ``no``, ``error`` or ``timeout``.
        """
        try:
            count, seconds_hist = self._plugin_children[plugin, outcome]
        except KeyError:
            count, seconds_hist = self._new_plugin_children(plugin, outcome)
        count.inc()
        seconds_hist.observe(seconds)

    def _new_plugin_children(self, plugin: str, outcome: str) -> tuple[Counter, Histogram]:
        """Cache a plugin's children for every outcome, so its error and
        timeout series exist at zero; return those for ``outcome``."""
        _check("plugin outcome", outcome, PLUGIN_OUTCOMES)
        seconds_hist = self._plugin_seconds.labels(plugin)
        for each in PLUGIN_OUTCOMES:
            count = self._plugin_count.labels(plugin, each)
            self._plugin_children.setdefault((plugin, each), (count, seconds_hist))
        return self._plugin_children[plugin, outcome]

    def answer(self, word: str, offers: int) -> None:
        """Count one Ask verdict (``YES`` or ``NO``) and the offers it made."""
        try:
            child = self._answers[word]
        except KeyError:
            _check("response word", word, RESPONSE_WORDS)
            raise
        child.inc()
        if offers:
            self._offers.inc(offers)

    def bookings(self, event: str, n: int = 1) -> None:
        """Count ``n`` booking events: booked, cancelled, rejected or expired."""
        try:
            child = self._bookings[event]
        except KeyError:
            _check("booking event", event, BOOKING_EVENTS)
            raise
        child.inc(n)

    def inflight(self) -> AbstractContextManager[None]:
        """A context manager that counts an RPC in ``ep_rpc_in_flight`` while inside it.

        The same object is returned each time (it holds no per-use state).
        """
        return self._in_flight

    def plugins_loaded(self, states: Mapping[str, str]) -> None:
        """Publish each plugin's state (e.g. loaded, blocked, failed).

        Replaces what an earlier call published, so a plugin has one series.
        """
        self._plugin_info.clear()
        for plugin, state in states.items():
            self._plugin_info.labels(plugin, state).set(1)

    # -- exposition --------------------------------------------------------

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on ``host:port`` (port 0: any free port).

        The server runs in a daemon thread; binding (which may resolve
        ``host``) happens in a worker thread so the event loop is not blocked.
        Returns the bound port. Raises RuntimeError if already serving.
        """
        if self._httpd is not None:
            raise RuntimeError("metrics HTTP server already running")
        httpd, thread = await asyncio.to_thread(
            start_http_server, port, host, registry=self.registry
        )
        self._httpd, self._thread = httpd, thread
        return int(httpd.server_port)

    def close(self) -> None:
        """Stop the HTTP server, if any, and free its port. Safe to call twice.

        Takes a few milliseconds on a healthy server, so it may be called
        from a coroutine.
        """
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        _stop(httpd)
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
