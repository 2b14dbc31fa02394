"""The hook implementations: the entry point names this module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ep_plugin_hello.config import HelloConfig
from ep_plugin_hello.reasons import bad_greeting
from ep_server import Claim, HostInfo, Limit, Offer, TaskQuery, Verdict, fit_resources, hookimpl

TASKTYPE = "uri://hello-world"
SERVICETYPE = "uri://hello-service"


@hookimpl
def ep_configure(settings: Mapping[str, Any]) -> HelloConfig:
    """[plugin.hello] needs an endpoint; it becomes this plugin's config."""
    return HelloConfig.model_validate(settings)


@hookimpl
def ep_claims() -> list[Claim]:
    return [Claim(TASKTYPE, (SERVICETYPE,))]


@hookimpl
async def ep_evaluate(query: TaskQuery, config: HelloConfig, host: HostInfo) -> Verdict:
    greeting = query.taskinfo.get("greeting", "hello")
    reasons = [] if isinstance(greeting, str) else [bad_greeting(greeting)]
    fit = fit_resources(query.resources, cores=Limit.host(host.cores, "this host's cores"))
    if reasons or fit.reasons:
        return Verdict.no(*reasons, *fit.reasons)
    info = {"endpoint": config.endpoint, "greeting": greeting}
    return Verdict.yes(Offer(SERVICETYPE, info, fit.resources, fit.message))
