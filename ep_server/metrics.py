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

``ep_rpc_in_flight`` is the number of calls inside a
:class:`~ep_server.pipeline.CallPipeline` now, read from the pipelines'
own counters when scraped (summed over the pipelines that count into
this object: one per server, shared by its gRPC and HTTP doors; each
process of ``--workers`` has its own server and metrics). A call
counts from when the pipeline takes it until its handler has returned or
raised, before its metrics and access log line are written; that
includes the moment in which a call is refused (concurrency limit,
credentials, rate limit) without reaching its handler, so a scrape may
see such a call for an instant.

The recording methods are on the hot path (once per RPC, once per
Ask and once per plugin evaluation): a call costs a dict lookup or two,
integer and float additions into plain lists, and a bisect into the
bucket bounds; no lock, and no object made per call but the new
numbers themselves. The values are exposed by a
collector of this module registered in the registry, in the same names,
help texts, labels, bucket bounds, series order and ``_created`` series
as prometheus_client's own Counter, Histogram and Gauge would give them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

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

# A histogram's upper bounds, +Inf last, and their ``le`` label values.
_BOUNDS: Final = (*DURATION_BUCKETS, math.inf)
_LE: Final = tuple(floatToGoString(bound) for bound in _BOUNDS)  # type: ignore[no-untyped-call]
# A histogram series is one list: a count per bucket (not cumulative), then
# the sum of the values observed, at index _SUM.
_SUM: Final = len(_BOUNDS)

# Thread safety. Every recording method but bookings() is called on the
# event loop's thread only, so each cell has one writer and an increment
# (read, add, store) cannot lose a concurrent one. collect() runs in the
# metrics HTTP server's thread and only reads: reading a list item is
# atomic under the GIL, and list(cell) copies a histogram's buckets and sum
# in one step, so a histogram's count, taken as the sum of its buckets as
# prometheus_client does, always equals its +Inf bucket; its sum may lag
# its buckets by the one observation being recorded at that instant (as
# with prometheus_client's own Histogram). New series are appended to
# lists that collect() copies first. bookings() may be called from the
# ledger's worker threads, possibly several at once, so its counts are
# changed under a lock of their own. (This reasoning needs the GIL: a
# free-threaded CPython would need a lock per family.)


class _Family:
    """The series of one metric family, in the order they were created.

    A series is ``(label values, created, cell)``, where ``cell`` is a list
    the recording methods change in place: ``[value]`` for a counter, the
    buckets and sum for a histogram.
    """

    __slots__ = ("help", "labels", "name", "series")

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self.series: list[tuple[tuple[str, ...], float, list[float]]] = []

    def counter(self, *values: str) -> list[float]:
        """A new counter series at zero, for these label values."""
        cell: list[float] = [0]
        self.series.append((values, time.time(), cell))
        return cell

    def histogram(self, *values: str) -> list[float]:
        """A new empty histogram series, for these label values."""
        cell: list[float] = [0] * _SUM + [0.0]
        self.series.append((values, time.time(), cell))
        return cell

    def counter_family(self, created: bool) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for values, when, cell in tuple(self.series):
            family.add_metric(values, float(cell[0]), when if created else None)
        return family

    def histogram_family(self, created: bool) -> Metric:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for values, when, cell in tuple(self.series):
            snapshot = list(cell)
            buckets, total = [], 0.0
            for le, count in zip(_LE, snapshot, strict=False):
                total += count
                buckets.append((le, total))
            family.add_metric(values, buckets, snapshot[_SUM])
            if created:
                family.add_sample(
                    self.name + "_created", dict(zip(self.labels, values, strict=True)), when
                )
        return family


class _Timed:
    """A counter and a histogram recorded together (``ep_rpc_*``,
    ``ep_plugin_evaluation*``, ``ep_http_*``): per value of the
    histogram's label, the counter's cells by their second label's value."""

    __slots__ = ("counts", "times")

    def __init__(self, times: list[float]) -> None:
        self.times = times
        self.counts: dict[object, list[float]] = {}


def _observe(timed: _Timed, seconds: float) -> None:
    """Observe one duration: the first bucket whose bound is >= ``seconds``.
    (A NaN, which no caller passes, would count in the first bucket, where
    prometheus_client's Histogram counts it in none.)"""
    times = timed.times
    times[bisect_left(_BOUNDS, seconds)] += 1
    times[_SUM] += seconds


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


def _check_increment(amount: float) -> None:
    """Raise ValueError, as a prometheus_client Counter does, for a negative amount."""
    if amount < 0:
        raise ValueError("Counters can only be incremented by non-negative amounts.")


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
        self.registry.register(_Collector(self))

    # -- definitions ------------------------------------------------------

    def _define_rpc_metrics(self) -> None:
        """Create the per-RPC families and their lookups."""
        self._rpc_count = _Family(
            "ep_rpc_requests", "RPCs handled, by method and gRPC status code.", ["method", "code"]
        )
        self._rpc_seconds = _Family(
            "ep_rpc_duration_seconds", "Time to handle an RPC, by method.", ["method"]
        )
        self._rpcs: dict[str, _Timed] = {}
        #: What ep_rpc_in_flight sums (count_in_flight()).
        self._in_flight: tuple[Callable[[], int], ...] = ()

    def _define_plugin_metrics(self) -> None:
        """Create the per-plugin families and their lookups."""
        self._plugin_count = _Family(
            "ep_plugin_evaluations",
            "Plugin evaluations, by plugin and outcome (yes, no, error, timeout).",
            ["plugin", "outcome"],
        )
        self._plugin_seconds = _Family(
            "ep_plugin_evaluation_duration_seconds",
            "Time a plugin took to evaluate a task.",
            ["plugin"],
        )
        self._plugins: dict[str, _Timed] = {}
        self._plugin_states: tuple[tuple[str, str], ...] = ()

    def _define_business_metrics(self) -> None:
        """Create the answer, offer and booking counters, all series at zero."""
        self._answer_count = _Family(
            "ep_ask_answers", "Ask verdicts, by response word.", ["responseword"]
        )
        self._offer_count = _Family("ep_offers", "Offers made in Ask answers.")
        self._booking_count = _Family(
            "ep_bookings", "Booking events (booked, cancelled, rejected, expired).", ["event"]
        )
        # Every series exists from the start, so rate() and alerts see zeros.
        self._offers = self._offer_count.counter()
        self._answers = {w: self._answer_count.counter(w) for w in sorted(RESPONSE_WORDS)}
        self._bookings = {e: self._booking_count.counter(e) for e in sorted(BOOKING_EVENTS)}
        self._bookings_lock = threading.Lock()

    def _define_http_metrics(self) -> None:
        """Create the per-route HTTP families and their lookups."""
        self._http_count = _Family(
            "ep_http_requests", "HTTP requests handled, by route and HTTP status.",
            ["route", "status"],
        )  # fmt: skip
        self._http_seconds = _Family(
            "ep_http_request_duration_seconds", "Time to handle an HTTP request, by route.",
            ["route"],
        )  # fmt: skip
        self._routes: dict[str, _Timed] = {}

    # -- recording (hot path) ----------------------------------------------

    def http(self, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request and observe its duration; ``route`` is a
        template the server defines (never a path a client sent)."""
        try:
            timed = self._routes[route]
            timed.counts[status][0] += 1
        except KeyError:
            timed = self._timed(self._routes, self._http_seconds, route)
            self._count(timed, self._http_count, route, status, str(status))
        _observe(timed, seconds)

    def rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and observe its duration.

        ``method`` must come from the service's fixed set of RPC names and
        ``code`` be a gRPC status name such as ``"OK"``.
        """
        try:
            timed = self._rpcs[method]
            timed.counts[code][0] += 1
        except KeyError:
            timed = self._timed(self._rpcs, self._rpc_seconds, method)
            self._count(timed, self._rpc_count, method, code, code)
        _observe(timed, seconds)

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None:
        """Count one plugin evaluation and observe its duration.

        ``outcome`` is one of ``yes``, ``no``, ``error`` or ``timeout``.
        """
        try:
            timed = self._plugins[plugin]
            timed.counts[outcome][0] += 1
        except KeyError:
            timed = self._new_plugin(plugin, outcome)
            timed.counts[outcome][0] += 1
        _observe(timed, seconds)

    def _new_plugin(self, plugin: str, outcome: str) -> _Timed:
        """A plugin's series, made with every outcome at zero on first use,
        so its error and timeout series exist at zero."""
        _check("plugin outcome", outcome, PLUGIN_OUTCOMES)
        timed = self._plugins.get(plugin)
        if timed is None:
            timed = _Timed(self._plugin_seconds.histogram(plugin))
            for each in PLUGIN_OUTCOMES:
                timed.counts[each] = self._plugin_count.counter(plugin, each)
            self._plugins[plugin] = timed
        return timed

    @staticmethod
    def _timed(known: dict[str, _Timed], family: _Family, value: str) -> _Timed:
        """The counter-and-histogram of a label value, made on first use."""
        timed = known.get(value)
        if timed is None:
            timed = known[value] = _Timed(family.histogram(value))
        return timed

    @staticmethod
    def _count(timed: _Timed, family: _Family, value: str, key: object, label: str) -> None:
        """Count one in the series ``(value, label)``, made on first use."""
        cell = timed.counts.get(key)
        if cell is None:
            cell = timed.counts[key] = family.counter(value, label)
        cell[0] += 1

    def answer(self, word: str, offers: int) -> None:
        """Count one Ask verdict (``YES`` or ``NO``) and the offers it made."""
        try:
            self._answers[word][0] += 1
        except KeyError:
            _check("response word", word, RESPONSE_WORDS)
            raise
        if offers:
            _check_increment(offers)
            self._offers[0] += offers

    def bookings(self, event: str, n: int = 1) -> None:
        """Count ``n`` booking events: booked, cancelled, rejected or expired."""
        try:
            cell = self._bookings[event]
        except KeyError:
            _check("booking event", event, BOOKING_EVENTS)
            raise
        _check_increment(n)
        with self._bookings_lock:
            cell[0] += n

    def count_in_flight(self, source: Callable[[], int]) -> None:
        """Add ``source()``, the number of RPCs some pipeline is handling
        now, to ``ep_rpc_in_flight``; it is called at each scrape, from
        the thread that scrapes."""
        self._in_flight = (*self._in_flight, source)

    def plugins_loaded(self, states: Mapping[str, str]) -> None:
        """Publish each plugin's state (e.g. loaded, blocked, failed).

        Replaces what an earlier call published, so a plugin has one series.
        """
        self._plugin_states = tuple(states.items())

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


class _Collector:
    """Exposes a :class:`Metrics` object's values to its registry
    (prometheus_client's Collector protocol)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        """The families without their samples, for the registry's check of
        duplicate names."""
        for family in self._families(created=False):
            family.samples = []
            yield family

    def collect(self) -> Iterator[Metric]:
        # disable_created_metrics() or PROMETHEUS_DISABLE_CREATED_SERIES
        # turn _created off for prometheus_client's own metrics; here too.
        return self._families(bool(getattr(_prometheus_metrics, "_use_created", True)))

    def _families(self, created: bool) -> Iterator[Metric]:
        m = self._metrics
        yield m._rpc_count.counter_family(created)
        yield m._rpc_seconds.histogram_family(created)
        in_flight = sum(source() for source in m._in_flight)
        yield GaugeMetricFamily("ep_rpc_in_flight", "RPCs being handled now.", float(in_flight))
        yield m._plugin_count.counter_family(created)
        yield m._plugin_seconds.histogram_family(created)
        info = GaugeMetricFamily(
            "ep_plugin_info",
            "Plugins known to the server and their state (always 1).",
            labels=("plugin", "state"),
        )
        for plugin, state in m._plugin_states:
            info.add_metric((plugin, state), 1.0)
        yield info
        yield m._answer_count.counter_family(created)
        yield m._offer_count.counter_family(created)
        yield m._booking_count.counter_family(created)
        yield m._http_count.counter_family(created)
        yield m._http_seconds.histogram_family(created)
