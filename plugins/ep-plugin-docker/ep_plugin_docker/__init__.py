"""ep-plugin-docker: can this host run that docker container?

An EP plugin (entry point ``docker`` in the ``ep_server`` group). It claims
the docker-container task type, under the IVOA note's URI and the IVOA
ExecutionBroker's, reads the taskinfo (image reference, platform,
privileges, networking and ports), checks it against the host and the
site's policy in ``[plugin.docker]``, and offers the configured services.
See README.md for the configuration keys and the reason codes.

The hook implementations are thin: the decision lives in
:mod:`ep_plugin_docker.decide` and the modules it uses, free of gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ep_plugin_docker.config import DockerConfig
from ep_plugin_docker.decide import decide
from ep_plugin_docker.policy import Site
from ep_plugin_docker.runtime import check_runtime
from ep_server import Claim, HostInfo, TaskQuery, Verdict, hookimpl

__all__ = ["TASKTYPES", "ep_claims", "ep_configure", "ep_evaluate"]

#: The task types claimed: the IVOA note's, and the ExecutionBroker's alias.
TASKTYPES = (
    "uri://docker-container",
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
)


@hookimpl
def ep_configure(settings: Mapping[str, Any], host: HostInfo) -> Site:
    """Validate ``[plugin.docker]`` (a ``pydantic.ValidationError`` names the
    bad key) and resolve it against the host."""
    return Site.resolve(DockerConfig.model_validate(settings), host)


@hookimpl
def ep_claims(config: Site) -> list[Claim]:
    """Both task types, each with every configured service type."""
    servicetypes = tuple(dict.fromkeys(s.servicetype for s in config.services))
    return [Claim(tasktype, servicetypes) for tasktype in TASKTYPES]


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
    if problem is None:
        return verdict
    return Verdict.no(*verdict.reasons, problem)
