"""The hook implementations, thin: the decision lives in :mod:`ep_plugin_docker.decide`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ep_plugin_docker.config import DockerConfig
from ep_plugin_docker.decide import Site, decide
from ep_plugin_docker.runtime import check_runtime
from ep_server import Claim, HostInfo, TaskQuery, Verdict, hookimpl

__all__ = ["ep_claims", "ep_configure", "ep_evaluate"]


@hookimpl
def ep_configure(settings: Mapping[str, Any], host: HostInfo) -> Site:
    """Validate ``[plugin.docker]`` (a ``pydantic.ValidationError`` names the
    bad key) and resolve it against the host."""
    return Site.resolve(DockerConfig.model_validate(settings), host)


@hookimpl
def ep_claims(config: Site) -> list[Claim]:
    """Both task types, each with every configured service type."""
    return config.claims()


@hookimpl
async def ep_evaluate(query: TaskQuery, config: Site) -> Verdict:
    """Decide on the taskinfo, then (if configured) check the runtime.

    ``async`` on purpose: the decision is pure and quick, so it runs on the
    event loop without a thread hop, and the one wait, the runtime socket,
    is a non-blocking ``asyncio`` connection under ``runtime_timeout``, so it
    never stalls the loop. A plain function would instead hold one of the
    EP's worker threads for every Ask.
    """
    verdict = decide(query, config)
    if config.runtime_socket is None:
        return verdict
    problem = await check_runtime(config.runtime_socket, config.runtime_timeout)
    return verdict if problem is None else Verdict.no(*verdict.reasons, problem)
