"""The whole decision for one notebook request, with no gRPC and no pluggy.

:class:`Site` is what the plugin knows after start-up (the validated config,
the host's kernels, the resolved limits); :func:`decide` checks a query
against it. Every problem found becomes a reason, so a NO lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ep_plugin_jupyter.config import TASKTYPES, JupyterSettings, ServiceSettings
from ep_plugin_jupyter.kernels import Kernels, check_kernels, discover_kernels
from ep_plugin_jupyter.location import LocationRules, check_location
from ep_plugin_jupyter.resources import Fit, ResourceLimits, fit_resources
from ep_server import Claim, HostInfo, Offer, Reason, TaskQuery, Verdict

__all__ = ["Site", "decide"]


@dataclass(frozen=True, slots=True)
class Site:
    """This site's services and rules, resolved once at start-up."""

    services: tuple[ServiceSettings, ...]
    location: LocationRules
    kernels: Kernels
    limits: ResourceLimits

    @classmethod
    def build(cls, settings: JupyterSettings, host: HostInfo) -> Site:
        """Resolve the settings: notebook roots, kernel discovery, limits."""
        return cls(
            tuple(settings.services),
            LocationRules.from_settings(settings.notebook_roots, settings.allow_urls),
            discover_kernels(settings.kernels),
            ResourceLimits.of(host, settings.max_cores, settings.max_memory),
        )

    def claims(self) -> list[Claim]:
        """Each notebook task type, with every configured service type."""
        servicetypes = tuple(dict.fromkeys(s.servicetype for s in self.services))
        return [Claim(tasktype, servicetypes) for tasktype in TASKTYPES]


def decide(query: TaskQuery, site: Site) -> Verdict:
    """YES with one offer per configured service, or NO with every reason."""
    fit = fit_resources(query.resources, site.limits)
    location = check_location(query.taskinfo, site.location)
    reasons: list[Reason] = [location] if location else []
    reasons += check_kernels(query.taskinfo, site.kernels)
    reasons += fit.reasons
    if reasons:
        return Verdict.no(*reasons)
    return Verdict.yes(*(_offer(service, fit) for service in site.services))


def _offer(service: ServiceSettings, fit: Fit) -> Offer:
    return Offer(service.servicetype, service.serviceinfo, fit.resources, "; ".join(fit.notes))
