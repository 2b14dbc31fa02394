"""The site and the decision for one notebook request, with no gRPC and no pluggy.

:class:`Site` is what the plugin knows after start-up (the validated config,
the host's kernels, the per-task limits resolved against the host);
:func:`decide` checks a query against it. Every problem found becomes a
reason, so a NO lists them all. It reads the filesystem (a local notebook's
path), so it runs in a worker thread.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ep_plugin_jupyter import reasons as R
from ep_plugin_jupyter.config import JupyterConfig, Service
from ep_plugin_jupyter.kernels import Kernels, check_kernels, discover_kernels
from ep_plugin_jupyter.location import LocationRules, check_location, url_scheme
from ep_plugin_jupyter.values import is_object
from ep_server import (
    Claim,
    Fit,
    HostInfo,
    Limit,
    Offer,
    Reason,
    Resources,
    TaskQuery,
    Verdict,
    fit_resources,
)

__all__ = [
    "KNOWN_FIELDS",
    "TASKTYPES",
    "Site",
    "check_requirements",
    "decide",
    "ignored_fields",
]

#: The task types this plugin claims: the seed's, and the ExecutionBroker's.
TASKTYPES = (
    "uri://jupyter-notebook",
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/jupyter-notebook-1.0",
)

#: The taskinfo fields read, at the top level and in a ``notebook`` object.
#: Others are not refused (a newer client's fields must not turn a YES into
#: a NO) but named on the offer, so that a misspelt one is seen.
KNOWN_FIELDS = {
    "taskinfo": ("notebook", "location", "kernel", "language", "languages", "requirements"),
    "taskinfo.notebook": ("location", "kernel", "language", "languages", "requirements"),
}
_KNOWN_SETS = {path: frozenset(names) for path, names in KNOWN_FIELDS.items()}

#: How a refusal for resources says what a notebook may have.
_GETS = "a notebook here gets"


@dataclass(frozen=True, slots=True)
class Site:
    """This site's services and rules, resolved once at start-up;
    ``offered`` (each service's type and serviceinfo) is derived when the
    site is made."""

    services: tuple[Service, ...]
    location: LocationRules
    kernels: Kernels
    cores: Limit
    memory: Limit
    offered: tuple[tuple[str, Mapping[str, Any]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        offered = tuple((s.servicetype, s.serviceinfo) for s in self.services)
        object.__setattr__(self, "offered", offered)

    @classmethod
    def resolve(cls, config: JupyterConfig, host: HostInfo) -> Site:
        """Resolve the config: notebook roots, kernel discovery, and each
        per-task limit, the tighter of the host's and ``max_cores``/``max_memory``."""
        return cls(
            tuple(config.services),
            LocationRules.from_settings(config.notebook_roots, config.allow_urls),
            discover_kernels(config.kernels),
            _tighter(host.cores, config.max_cores, "cores"),
            _tighter(host.memory, config.max_memory, "memory"),
        )

    def claims(self) -> list[Claim]:
        """Each notebook task type, with every configured service type."""
        servicetypes = tuple(dict.fromkeys(s.servicetype for s in self.services))
        return [Claim(tasktype, servicetypes) for tasktype in TASKTYPES]

    def fit(self, asked: Resources) -> Fit:
        """The resources asked for, fitted under the per-task limits."""
        return fit_resources(asked, cores=self.cores, memory=self.memory, gets=_GETS)


def _tighter(host: int, configured: int | None, name: str) -> Limit:
    """The tighter of the host's capacity (0: unknown) and the per-task limit,
    with words saying which one it is."""
    if configured is not None and (not host or configured < host):
        return Limit(configured, f"the per-task limit of {name}")
    return Limit.host(host, f"this host's {name}")


def decide(query: TaskQuery, site: Site) -> Verdict:
    """YES with one offer per configured service, or NO with every reason."""
    taskinfo = query.taskinfo
    fit = site.fit(query.resources)
    location = check_location(taskinfo, site.location)
    reasons: list[Reason] = [location] if location else []
    reasons += check_kernels(taskinfo, site.kernels)
    reasons += check_requirements(taskinfo)
    reasons += fit.reasons
    if reasons:
        return Verdict.no(*reasons)
    message = fit.message
    ignored = ignored_fields(taskinfo)
    if ignored:
        note = f"ignored taskinfo fields this site does not know: {', '.join(ignored)}"
        message = f"{message}; {note}" if message else note
    resources = fit.resources
    return Verdict.yes(*[Offer(t, info, resources, message) for t, info in site.offered])


def check_requirements(taskinfo: Mapping[str, Any]) -> list[Reason]:
    """What is wrong with ``requirements`` (a pip requirements file: an
    http(s) URL, or a path relative to the notebook's location), at the top
    level or in a ``notebook`` object."""
    scopes: list[tuple[str, Mapping[str, Any]]] = [("taskinfo", taskinfo)]
    notebook = taskinfo.get("notebook")
    if is_object(notebook):
        scopes.append(("taskinfo.notebook", notebook))
    reasons = []
    for path, scope in scopes:
        value = scope.get("requirements")
        if value is None:
            continue
        where = f"{path}.requirements"
        if not isinstance(value, str) or not value.strip():
            message = f"{where}: must be a URL or a relative path, as a non-empty string"
            reasons.append(R.reason(R.INVALID_REQUIREMENTS, where, message))
            continue
        try:
            scheme = url_scheme(value)
        except ValueError as exc:  # urlsplit's refusal, e.g. an unclosed [ in the host
            message = f"{where}: {value!r} is not a URL: {exc}"
            reasons.append(R.reason(R.INVALID_REQUIREMENTS, where, message))
            continue
        if scheme and scheme not in ("http", "https"):
            message = f"{where}: {value!r} is neither an http(s) URL nor a relative path"
            reasons.append(R.reason(R.INVALID_REQUIREMENTS, where, message))
    return reasons


def ignored_fields(taskinfo: Mapping[str, Any]) -> tuple[str, ...]:
    """The taskinfo fields this plugin does not read, each as a path with
    the nearest known field if any (``taskinfo.kernal (did you mean
    kernel?)``)."""
    scopes: list[tuple[str, Mapping[str, Any]]] = [("taskinfo", taskinfo)]
    notebook = taskinfo.get("notebook")
    if is_object(notebook):
        scopes.append(("taskinfo.notebook", notebook))
    ignored = []
    for path, scope in scopes:
        if _KNOWN_SETS[path].issuperset(scope):
            continue
        known = KNOWN_FIELDS[path]
        for key in scope:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                ignored.append(f"{path}.{key}" + (f" (did you mean {near[0]}?)" if near else ""))
    return tuple(ignored)
