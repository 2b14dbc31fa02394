"""The hook implementations, thin: the decision lives in :mod:`ep_plugin_jupyter.decide`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ep_plugin_jupyter.config import JupyterConfig
from ep_plugin_jupyter.decide import Site, decide
from ep_server import Claim, HostInfo, TaskQuery, Verdict, hookimpl

__all__ = ["ep_claims", "ep_configure", "ep_evaluate"]

log = logging.getLogger(__name__)


@hookimpl
def ep_configure(settings: Mapping[str, Any], host: HostInfo) -> Site:
    """Validate ``[plugin.jupyter]`` and discover the host's kernels, once."""
    site = Site.resolve(JupyterConfig.model_validate(settings), host)
    kernels = ", ".join(site.kernels.languages()) or "none"
    log.info("jupyter kernels from %s: %s", site.kernels.source, kernels)
    return site


@hookimpl
def ep_claims(config: Site) -> list[Claim]:
    """The notebook task types, with the configured service types."""
    return config.claims()


@hookimpl
def ep_evaluate(query: TaskQuery, config: Site) -> Verdict:
    """Decide; a plain function, since checking a notebook path reads the
    filesystem (the EP runs it in a worker thread)."""
    return decide(query, config)
