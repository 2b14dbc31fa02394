"""Server lifecycle: build, serve health and reflection, shut down gracefully.

We use ``grpc.aio``: plugins may be coroutines, a per-plugin deadline is a
cancellation on the event loop rather than a thread per call, and the aio
health servicer reports NOT_SERVING during a graceful stop. Every RPC goes
through one :class:`~ep_server.pipeline.CallPipeline` (request id, identity,
rate limit, metrics), applied when the method handlers are built
(:func:`~ep_server.servicer.grpc_handler`), so it costs no interceptor
lookup per call.

:func:`start_server` assembles the parts: one
:class:`~ep_server.plugins.caller.PluginCaller` for every hook, the planner,
the bookings and their placer (when ``[schedule]`` is on), the servicer and
the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ep_server import reflection_v1, wire
from ep_server.auth import Authenticator
from ep_server.config import Settings
from ep_server.errors import StartupError
from ep_server.host import detect_host
from ep_server.http.door import http_app
from ep_server.http.serving import HttpDoor, start_http
from ep_server.metrics import Metrics
from ep_server.pipeline import CallPipeline
from ep_server.planner import Planner
from ep_server.plugins import PluginCaller, PluginRecord, PluginState, Registry, load_registry
from ep_server.ratelimit import RateLimiter
from ep_server.schedule.backends import describe_ledger, open_ledger
from ep_server.schedule.bookings import ANNOUNCE_PATIENCE, Bookings, resolve_pools, utcnow
from ep_server.schedule.ledger import LedgerUnavailable
from ep_server.schedule.placing import Placer
from ep_server.servicer import SERVICE, ExecutionPlannerServicer, grpc_handler, server_version
from ep_server.workers import notify_ready

__all__ = ["Running", "serve", "start_server"]

log = logging.getLogger(__name__)

#: Seconds between sweeps for announcements no process made in time, at most.
SWEEP_EVERY = 10.0

SERVICE_NAME = SERVICE.full_name
_REFLECTION_V1 = f"{reflection_v1.PACKAGE}.ServerReflection"


@dataclass
class Running:
    """A started server: the gRPC server, its bound port and its parts."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    planner: Planner
    caller: PluginCaller
    metrics: Metrics
    bookings: Bookings | None = None
    #: The port of the ``/metrics`` endpoint, when one is served.
    metrics_port: int | None = None
    #: Watches a shared ledger for the health service.
    watcher: asyncio.Future[None] | None = None
    #: Announces bookings that no process announced in time.
    sweeper: asyncio.Future[None] | None = None
    #: The HTTP door, when ``[http]`` is enabled.
    http: HttpDoor | None = None

    @property
    def http_port(self) -> int | None:
        """The HTTP door's bound port, when it is open."""
        return self.http.port if self.http is not None else None

    async def shutdown(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to ``grace``
        seconds, then stop: the bookings (their last notifications, then
        the ledger), the plugin threads, the metrics endpoint."""
        for task in (self.watcher, self.sweeper):
            if task is not None:
                task.cancel()
        await self.health.enter_graceful_shutdown()
        stops = [self.server.stop(grace)]
        if self.http is not None:
            stops.append(self.http.stop(grace))
        await asyncio.gather(*stops)
        if self.bookings is not None:
            await self.bookings.close()
        self.caller.close()
        self.metrics.close()


async def start_server(
    settings: Settings, registry: Registry, clock: Callable[[], datetime] | None = None
) -> Running:
    """Build and start a server for ``registry`` on ``settings.server.listen``.

    :param clock: "now" for offers and bookings (tests); default UTC now.
    :raises OSError: when the address cannot be bound.
    :raises StartupError: when a TLS, auth or ledger file cannot be used.
    """
    cfg = settings.server
    server = grpc.aio.server(options=_options(settings), interceptors=_tracing(settings))
    metrics = Metrics()
    metrics.plugins_loaded({r.name: r.state.name.lower() for r in registry.records})
    # Everything that can refuse a bad file comes before the ledger opens, so
    # that a refusal leaves no ledger (its lock, its connections) behind.
    pipeline = _pipeline(settings, metrics)
    caller = PluginCaller(settings.plugins.threads, settings.plugins.deadline)
    bookings, pools = _bookings(settings, registry, caller, metrics, clock or utcnow)
    try:
        placer = Placer(bookings, settings.schedule, registry, caller) if bookings else None
        planner = Planner(registry, caller, metrics, placer)
        limits = wire.Limits(
            cfg.max_taskinfo_bytes, cfg.max_taskinfo_depth, frozenset(registry.index)
        )
        info = wire.service_info_to_proto(registry, pools, server_version())
        servicer = ExecutionPlannerServicer(planner, limits, info, bookings, metrics)
        server.add_generic_rpc_handlers((grpc_handler(servicer, pipeline),))
        health_servicer = await _add_health_and_reflection(server)
    except BaseException:  # the ledger (its lock, its connections) goes too
        if bookings is not None:
            await bookings.close()
        caller.close(0)
        raise
    running = Running(server, 0, health_servicer, planner, caller, metrics, bookings)
    app = http_app(settings, servicer, pipeline, metrics) if settings.http.enabled else None
    if bookings is not None and settings.schedule.postgres:
        running.watcher = asyncio.ensure_future(_watch_ledger(bookings, health_servicer))
    if bookings is not None:
        every = min(SWEEP_EVERY, settings.schedule.announce_retry_after / 3)
        running.sweeper = asyncio.ensure_future(_sweep(bookings, every))
    try:
        running.port = _bind(server, settings)
        await server.start()
        if app is not None:
            running.http = await start_http(app, settings)
        if settings.metrics.listen:
            host, _, metrics_port = settings.metrics.listen.rpartition(":")
            running.metrics_port = await metrics.serve(host.strip("[]"), int(metrics_port))
    except BaseException:
        await running.shutdown(0)  # the ledger's lock and the threads go too
        raise
    return running


def _bookings(
    settings: Settings,
    registry: Registry,
    caller: PluginCaller,
    metrics: Metrics,
    clock: Callable[[], datetime],
) -> tuple[Bookings | None, dict[str, int]]:
    """The booking ledger and its bookings, when ``[schedule]`` is enabled,
    and the pools' capacities."""
    cfg = settings.schedule
    if not cfg.enabled:
        return None, {}
    pools = resolve_pools(cfg, registry.host)
    # An announcement waits for a busy plugin, then runs for up to the plugin
    # deadline, then is recorded: all of it well within the time after which
    # a sweep would announce it again (half the time left over is spare).
    spare = cfg.announce_retry_after - settings.plugins.deadline
    patience = min(ANNOUNCE_PATIENCE, spare / 2)
    ledger = open_ledger(cfg, pools)
    return Bookings(ledger, registry, caller, clock, metrics, patience), pools


async def _sweep(bookings: Bookings, every: float) -> None:
    """Announce, every ``every`` seconds, what no process announced in time
    (see :meth:`Bookings.sweep`); quietly skipped while the ledger is
    unreachable (the health watcher says so)."""
    while True:
        await asyncio.sleep(every)
        try:
            await bookings.sweep()
        except LedgerUnavailable:
            pass
        except Exception:
            log.exception("announcing due bookings failed")


async def _watch_ledger(
    bookings: Bookings, health: health.aio.HealthServicer, every: float = 1.0
) -> None:
    """Report the service NOT_SERVING while the ledger is unreachable, so
    that load balancers route around this replica, and SERVING again once
    it answers. The server as a whole ("") stays SERVING: it is alive, and
    answers what needs no ledger."""
    serving = True
    while True:
        try:
            reachable = await bookings.reachable()
        except Exception:  # a check that failed oddly is no answer: keep the last one
            log.exception("checking the booking ledger failed")
            await asyncio.sleep(every)
            continue
        if reachable != serving:
            serving = reachable
            status = health_pb2.HealthCheckResponse.SERVING
            if not serving:
                status = health_pb2.HealthCheckResponse.NOT_SERVING
            await health.set(SERVICE_NAME, status)
            log.warning("booking ledger %s: %s", "reachable again" if serving else "unreachable",
                        "serving" if serving else "not serving until it answers")  # fmt: skip
        await asyncio.sleep(every)


def _options(settings: Settings) -> list[tuple[str, Any]]:
    cfg, limits = settings.server, settings.limits
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", cfg.max_receive_message_bytes),
        ("grpc.max_send_message_length", cfg.max_send_message_bytes),
        # One process per port unless asked (--workers): a second EP on a
        # busy port must fail, not silently share the first one's traffic.
        ("grpc.so_reuseport", int(cfg.reuse_port)),
        ("grpc.keepalive_time_ms", int(limits.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(limits.keepalive_timeout * 1000)),
        # Clients may keep idle channels alive with pings, but no more often
        # than this; a client pinging faster is sent GOAWAY (too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(limits.min_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    # 0 means unlimited, which is gRPC's default when the option is absent;
    # passed as 0, gRPC would read it as "at once" (its minimum, 1 ms).
    if cfg.max_connection_age:
        options.append(("grpc.max_connection_age_ms", int(cfg.max_connection_age * 1000)))
    if cfg.max_connection_age_grace:
        grace_ms = int(cfg.max_connection_age_grace * 1000)
        options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options


def _tracing(settings: Settings) -> list[Any] | None:
    if not settings.tracing.enabled:
        return None
    try:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor
    except ImportError as exc:
        raise StartupError(
            "tracing.enabled needs OpenTelemetry: pip install 'ep-server[tracing]'"
        ) from exc
    _warn_without_sdk()
    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def _warn_without_sdk() -> None:
    """Say so when tracing is on but nothing records the spans: with no
    OpenTelemetry SDK set up in this process, the API's global tracer
    provider is still its placeholder and every span is dropped."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        log.warning(
            "[tracing] enabled = true, but no OpenTelemetry SDK is set up in this process, "
            "so spans go nowhere: install 'opentelemetry-distro[otlp]' beside ep-server and "
            "start it as opentelemetry-instrument ep-server serve ... "
            "(OTEL_EXPORTER_OTLP_ENDPOINT names the collector)"
        )


def _pipeline(settings: Settings, metrics: Metrics) -> CallPipeline:
    auth, limits = settings.auth, settings.limits
    # Always an Authenticator, even with nothing configured: a caller who sends
    # credentials the site cannot verify is refused, never taken as anonymous.
    authenticator = Authenticator(auth)
    if auth.jwt_issuer and not auth.jwt_audience:
        log.warning(
            "auth.jwt_audience is not set: any token from %s is accepted, even one "
            "issued for another service",
            auth.jwt_issuer,
        )
    return CallPipeline(
        authenticator=authenticator,
        mtls=settings.tls.client_ca is not None,
        anonymous=frozenset(auth.anonymous),
        limiter=RateLimiter(limits.ask_rate, limits.ask_burst) if limits.ask_rate else None,
        auth_failures=(
            RateLimiter(limits.auth_failure_rate, limits.auth_failure_burst)
            if limits.auth_failure_rate
            else None
        ),
        metrics=metrics,
        access_log=settings.logging.access_log,
        max_concurrent=limits.max_concurrent_rpcs,
    )


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    listen, tls = settings.server.listen, settings.tls
    try:
        if not tls.enabled:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, _credentials(settings))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: {_why_not(listen) or exc}") from exc


def _why_not(listen: str) -> str | None:
    """Why ``listen`` cannot be bound, in the system's words ("address
    already in use"), found by binding a plain socket there: gRPC says only
    "Failed to bind". None when that socket binds."""
    host, _, port = listen.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except (OSError, ValueError, IndexError) as exc:
        return (getattr(exc, "strerror", None) or str(exc)).lower()
    return None


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    tls = settings.tls
    assert tls.cert is not None
    assert tls.key is not None
    return grpc.ssl_server_credentials(
        [(_read(tls.key, "tls.key"), _read(tls.cert, "tls.cert"))],
        root_certificates=_read(tls.client_ca, "tls.client_ca") if tls.client_ca else None,
        require_client_auth=tls.require_client_cert,
    )


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StartupError(f"{key}: cannot read {path}: {exc.strerror}") from exc


async def _add_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """The standard health service (SERVING now, NOT_SERVING on shutdown) and
    server reflection, so grpcurl and ``buf curl`` work without our protos.

    grpcio-reflection implements only ``grpc.reflection.v1alpha``; ``v1`` has
    the same messages on the wire, so the same servicer also answers under
    the ``v1`` name for tools that do not fall back to ``v1alpha``, and
    :mod:`~ep_server.reflection_v1` puts ``v1``'s schema in the pool, for
    tools that ask for every listed service's schema.
    """
    reflection_v1.register()
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME, _REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    reflection_servicer = reflection.ReflectionServicer(names)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                _REFLECTION_V1,
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        reflection_servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return health_servicer


def describe_startup(
    settings: Settings, registry: Registry, port: int, http_port: int | None = None
) -> str:
    """The one start-up log line: where it listens and which plugins loaded."""
    host = settings.server.listen.rpartition(":")[0]
    http_host = settings.http.listen.rpartition(":")[0]
    scheme = "https" if settings.tls.enabled else "http"
    parts = [
        f"ep-server {server_version()} listening on {host}:{port}",
        f"http: {scheme}://{http_host}:{http_port}/" if http_port is not None else "http: off",
        f"config: {settings.source}",
        "plugins: " + (", ".join(_plugin_label(r) for r in registry.loaded) or "none"),
    ]
    for state in (PluginState.FAILED, PluginState.BLOCKED):
        names = [r.name for r in registry.records if r.state is state]
        if names:
            parts.append(f"{state.name.lower()}: {', '.join(names)}")
    parts.append(
        f"bookings: ledger {describe_ledger(settings.schedule.ledger)}"
        if settings.schedule.enabled
        else "bookings: off"
    )
    parts += [f"{name}: {state}" for name, state in _features(settings)]
    return "; ".join(parts)


def _features(settings: Settings) -> list[tuple[str, str]]:
    """Whether TLS, credentials, metrics and tracing are on, for the
    start-up line."""
    tls, auth = settings.tls, settings.auth
    kinds = [k for k, on in (("tokens", auth.tokens_file), ("jwt", auth.jwt_issuer)) if on]
    if tls.client_ca is not None:
        kinds.append("mtls")
    return [
        ("tls", ("on, client certificates required" if tls.client_ca else "on")
                if tls.enabled else "off"),
        ("auth", ", ".join(kinds) if kinds else "off (anonymous callers only)"),
        ("metrics", settings.metrics.listen or "off"),
        ("tracing", "on" if settings.tracing.enabled else "off"),
    ]  # fmt: skip


def _plugin_label(record: PluginRecord) -> str:
    return f"{record.name} ({record.distribution} {record.version})".replace(" )", ")")


async def serve(settings: Settings, registry: Registry | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    # Signals first: one that arrives while starting still stops gracefully.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = registry or load_registry(settings, detect_host(settings.host))
    running = await start_server(settings, registry)
    log.info("%s", describe_startup(settings, registry, running.port, running.http_port))
    notify_ready()
    await stop.wait()
    log.info("shutting down: in-flight calls get %.3gs to finish", settings.server.grace_period)
    await running.shutdown(settings.server.grace_period)
    log.info("stopped")
