"""An example EP plugin: offers a "hello" service for the uri://hello-world task type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ep_server import Cause, Claim, Offer, PluginConfigError, Reason, TaskQuery, Verdict, hookimpl

TASKTYPE = "uri://hello-world"
SERVICETYPE = "uri://hello-service"


@hookimpl
def ep_configure(settings: Mapping[str, Any]) -> str:
    """[plugin.hello] needs an endpoint; it becomes this plugin's config."""
    endpoint = settings.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise PluginConfigError("endpoint", "must be an http(s) URL")
    return endpoint


@hookimpl
def ep_claims() -> list[Claim]:
    return [Claim(TASKTYPE, (SERVICETYPE,))]


@hookimpl
async def ep_evaluate(query: TaskQuery, config: str) -> Verdict:
    greeting = query.taskinfo.get("greeting", "hello")
    if not isinstance(greeting, str):
        return Verdict.no(
            Reason(
                "BAD_GREETING",
                "greeting must be a string",
                Cause.REQUEST,
                field="taskinfo.greeting",
            )
        )
    return Verdict.yes(Offer(SERVICETYPE, {"endpoint": config, "greeting": greeting}))
