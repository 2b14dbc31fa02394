"""The ``ExecutionPlannerService`` RPCs: thin, converting at the edge only."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import grpc

from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.metrics import Metrics
from ep_server.model import ANONYMOUS, Identity
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.planner import Planner
from ep_server.plugins import PluginState, Registry
from ep_server.wire import Limits, Undecodable, answer_to_proto, query_from_request

__all__ = ["ExecutionPlannerServicer", "service_info"]

# Leave this much of the caller's own deadline for sending the answer back.
_REPLY_MARGIN = 0.05

_STATE = {
    PluginState.LOADED: pb.PLUGIN_STATE_LOADED,
    PluginState.FAILED: pb.PLUGIN_STATE_FAILED,
    PluginState.BLOCKED: pb.PLUGIN_STATE_BLOCKED,
}


def server_version() -> str:
    """The installed ep-server version."""
    try:
        return version("ep-server")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


class ExecutionPlannerServicer:
    """Implements the RPCs on a :class:`Planner`."""

    def __init__(self, planner: Planner, limits: Limits, metrics: Metrics | None = None) -> None:
        self.planner = planner
        self.limits = limits
        self.metrics = metrics
        # What GetServiceInfo says never changes while the server runs.
        self._info = service_info(planner.registry)

    async def Ask(
        self,
        request: pb.AskRequest | Undecodable,
        context: grpc.aio.ServicerContext[Any, Any],
        identity: Identity = ANONYMOUS,
    ) -> pb.AskResponse:
        """Answer "can I do this?"."""
        query = query_from_request(request, self.limits, identity)
        remaining = context.time_remaining()
        budget = None if remaining is None else remaining - _REPLY_MARGIN
        response = answer_to_proto(await self.planner.ask(query, budget))
        if self.metrics is not None:
            self.metrics.answer("YES" if response.offers else "NO", len(response.offers))
        return response

    async def GetServiceInfo(
        self,
        request: pb.GetServiceInfoRequest | Undecodable,
        context: grpc.aio.ServicerContext[Any, Any],
        identity: Identity = ANONYMOUS,
    ) -> pb.GetServiceInfoResponse:
        """Describe this EP."""
        if isinstance(request, Undecodable):
            raise InvalidArgument(
                "GetServiceInfoRequest", [FieldViolation("", f"undecodable: {request.error}")]
            )
        return self._info


def service_info(registry: Registry) -> pb.GetServiceInfoResponse:
    """Build the ``GetServiceInfo`` answer from the registry."""
    info = pb.GetServiceInfoResponse(server_version=server_version())
    by_tasktype: dict[str, list[pb.ServiceTypeInfo]] = {}
    for record in registry.records:
        info.plugins.append(
            pb.PluginInfo(
                name=record.name,
                distribution=record.distribution,
                version=record.version,
                state=_STATE[record.state],
                error=record.error,
                tasktypes=[c.tasktype for c in record.claims],
                servicetypes=list(dict.fromkeys(s for c in record.claims for s in c.servicetypes)),
            )
        )
        for claim in record.claims:
            services = by_tasktype.setdefault(claim.tasktype, [])
            services.extend(
                pb.ServiceTypeInfo(servicetype=s, plugin=record.name) for s in claim.servicetypes
            )
    for tasktype in sorted(by_tasktype):
        info.tasktypes.append(pb.TaskTypeInfo(tasktype=tasktype, services=by_tasktype[tasktype]))
    host = registry.host
    info.capacity.CopyFrom(
        pb.HostCapacity(
            cores=host.cores, memory=host.memory, architecture=host.architecture, os=host.os
        )
    )
    return info
