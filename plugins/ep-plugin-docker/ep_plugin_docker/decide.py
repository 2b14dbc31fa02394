"""The decision: a :class:`~ep_server.TaskQuery` against a :class:`Site`.

Pure: no I/O, no gRPC. Every check runs, so a NO lists every problem found;
a YES offers each configured service with the resources fitted to the
per-task limits.
"""

from __future__ import annotations

from collections.abc import Iterable

from ep_plugin_docker.policy import Fit, Site, check_platforms, check_policy, fit_resources
from ep_plugin_docker.taskinfo import read_taskinfo
from ep_server import Offer, Reason, TaskQuery, Verdict

__all__ = ["decide", "offers_or_reasons"]


def decide(query: TaskQuery, site: Site) -> Verdict:
    """Decide whether this host can run the container ``query`` describes."""
    request, found = read_taskinfo(query.taskinfo)
    found += check_platforms(request, site)
    found += check_policy(request, site)
    fit = fit_resources(query.resources, site)
    return offers_or_reasons(site, fit, [*found, *fit.reasons])


def offers_or_reasons(site: Site, fit: Fit, reasons: Iterable[Reason]) -> Verdict:
    """NO with ``reasons`` if there are any, else YES with one offer per service."""
    found = tuple(reasons)
    if found:
        return Verdict.no(*found)
    message = "; ".join(fit.notes)
    return Verdict.yes(
        *(Offer(s.servicetype, s.serviceinfo, fit.resources, message) for s in site.services)
    )
