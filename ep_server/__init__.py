"""ep-server: the IVOA ExecutionPlanner, a gRPC service that answers "can I do this?".

The public surface for plugin authors: the :data:`hookimpl` marker, the plain
objects plugins receive and return, the errors they may raise, and the one
resource-fitting rule (:mod:`ep_server.fitting`). See :mod:`ep_server.hookspecs`
for the hooks.
"""

from __future__ import annotations

from ep_server.errors import PluginConfigError
from ep_server.fitting import Fit, Limit, RangeFit, fit_range, fit_resources
from ep_server.hookspecs import hookimpl
from ep_server.model import (
    ANONYMOUS,
    Booking,
    BookingState,
    Cause,
    Claim,
    FrozenInfo,
    HostInfo,
    Identity,
    IntRange,
    Offer,
    Reason,
    Resources,
    Schedule,
    Slot,
    TaskQuery,
    Verdict,
    Window,
    parse_bytes,
)
from ep_server.uri import uri_problem

__all__ = [
    "ANONYMOUS",
    "Booking",
    "BookingState",
    "Cause",
    "Claim",
    "Fit",
    "FrozenInfo",
    "HostInfo",
    "Identity",
    "IntRange",
    "Limit",
    "Offer",
    "PluginConfigError",
    "RangeFit",
    "Reason",
    "Resources",
    "Schedule",
    "Slot",
    "TaskQuery",
    "Verdict",
    "Window",
    "fit_range",
    "fit_resources",
    "hookimpl",
    "parse_bytes",
    "uri_problem",
]
