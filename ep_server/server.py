"""Server lifecycle: build, serve health and reflection, shut down gracefully.

We use ``grpc.aio``: plugins may be coroutines, a per-plugin deadline is a
cancellation on the event loop rather than a thread per call, and the aio
health servicer reports NOT_SERVING during a graceful stop. Errors are mapped
to ``google.rpc.Status`` in one place (:func:`_guarded`), applied when the
method handlers are built, so it costs no interceptor lookup per call.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_status import rpc_status

from ep_server.config import Settings
from ep_server.errors import ERROR_DOMAIN, EPError, InvalidArgument
from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.planner import Planner
from ep_server.plugins import PluginRecord, PluginState, Registry, load_registry
from ep_server.servicer import ExecutionPlannerServicer, server_version
from ep_server.wire import Limits, Undecodable, decode_ask
from ep_server.workers import notify_ready

__all__ = ["Running", "serve", "start_server"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExecutionPlannerService"].full_name
_REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


@dataclass
class Running:
    """A started server: the gRPC server, its bound port and its parts."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    planner: Planner

    async def shutdown(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to ``grace``
        seconds, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.planner.close()


async def start_server(settings: Settings, registry: Registry) -> Running:
    """Build and start a server for ``registry`` on ``settings.server.listen``.

    :raises OSError: when the address cannot be bound.
    """
    cfg = settings.server
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.max_receive_message_bytes),
            ("grpc.max_send_message_length", cfg.max_send_message_bytes),
            # One process per port unless asked (--workers): a second EP on a
            # busy port must fail, not silently share the first one's traffic.
            ("grpc.so_reuseport", int(cfg.reuse_port)),
        ]
    )
    planner = Planner(registry, settings.plugins.deadline, settings.plugins.threads)
    limits = Limits(cfg.max_taskinfo_bytes, cfg.max_taskinfo_depth, frozenset(registry.index))
    servicer = ExecutionPlannerServicer(planner, limits)
    server.add_generic_rpc_handlers((_service_handler(servicer),))
    health_servicer = await _add_health_and_reflection(server)
    try:
        port = server.add_insecure_port(cfg.listen)
    except RuntimeError as exc:
        planner.close()
        raise OSError(f"cannot listen on {cfg.listen}: {exc}") from exc
    await server.start()
    return Running(server, port, health_servicer, planner)


def _service_handler(servicer: ExecutionPlannerServicer) -> grpc.GenericRpcHandler:
    def decoder(cls: Any) -> Callable[[bytes], Any]:
        def decode(data: bytes) -> Any:
            try:
                return cls.FromString(data)
            except Exception as exc:  # DecodeError; never let gRPC answer UNKNOWN
                return Undecodable(data, str(exc))

        return decode

    handlers = {
        "Ask": grpc.unary_unary_rpc_method_handler(
            _guarded(servicer.Ask),
            request_deserializer=decode_ask,
            response_serializer=pb.AskResponse.SerializeToString,
        ),
        "GetServiceInfo": grpc.unary_unary_rpc_method_handler(
            _guarded(servicer.GetServiceInfo),
            request_deserializer=decoder(pb.GetServiceInfoRequest),
            response_serializer=pb.GetServiceInfoResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _guarded(method: Handler) -> Handler:
    """Map :class:`EPError` to its status with ``ErrorInfo`` (and
    ``BadRequest``) details; anything else is INTERNAL, logged, never a crash."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(request, context)
        except EPError as exc:
            status = rpc_status.to_status(_status_proto(exc))
            await context.abort(status.code, status.details, status.trailing_metadata)
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    handler.__name__ = method.__name__
    return handler


def _status_proto(exc: EPError) -> status_pb2.Status:
    status = status_pb2.Status(code=exc.code.value[0], message=exc.message)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata
    )
    details = [info]
    if isinstance(exc, InvalidArgument):
        details.insert(
            0,
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            ),
        )
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


async def _add_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """The standard health service (SERVING now, NOT_SERVING on shutdown) and
    server reflection, so grpcurl and ``buf curl`` work without our protos.

    grpcio-reflection implements only ``grpc.reflection.v1alpha``; ``v1`` has
    the same messages on the wire, so the same servicer also answers under
    the ``v1`` name for tools that do not fall back to ``v1alpha``.
    """
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


def describe_startup(settings: Settings, registry: Registry, port: int) -> str:
    """The one start-up log line: where it listens and which plugins loaded."""
    host = settings.server.listen.rpartition(":")[0]
    parts = [
        f"ep-server {server_version()} listening on {host}:{port}",
        f"config: {settings.source}",
        "plugins: " + (", ".join(_plugin_label(r) for r in registry.loaded) or "none"),
    ]
    for state in (PluginState.FAILED, PluginState.BLOCKED):
        names = [r.name for r in registry.records if r.state is state]
        if names:
            parts.append(f"{state.name.lower()}: {', '.join(names)}")
    return "; ".join(parts)


def _plugin_label(record: PluginRecord) -> str:
    return f"{record.name} ({record.distribution} {record.version})".replace(" )", ")")


async def serve(settings: Settings, registry: Registry | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    registry = registry or load_registry(settings, detect_host(settings.host))
    running = await start_server(settings, registry)
    log.info("%s", describe_startup(settings, registry, running.port))
    notify_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: in-flight calls get %.3gs to finish", settings.server.grace_period)
    await running.shutdown(settings.server.grace_period)
    log.info("stopped")
