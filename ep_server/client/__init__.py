"""The ExecutionPlanner client: ask one EP, or many at once, and choose.

::

    from ep_server.client import Client, TaskQuery, choose, load_sites

    sites = load_sites("sites.toml")
    query = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})
    async with Client() as client:
        results = [r async for r in client.ask_many(sites, query, deadline=5.0)]
    best = choose(results, accept=["uri://docker-uws"])

Results are plain dataclasses (:class:`Result` holding an :class:`Answer` or
a :class:`Failure`); protobuf stays inside :mod:`ep_server.client.convert`.
"""

from __future__ import annotations

from ep_server.client.ask import Client, Metadata, Query
from ep_server.client.channels import ChannelPool, CredentialsError
from ep_server.client.choose import (
    Choice,
    RankKey,
    candidates,
    choose,
    earliest,
    fastest,
    most_cores,
    most_memory,
    preference,
    rank,
)
from ep_server.client.results import (
    Answer,
    Failure,
    FailureKind,
    Offer,
    PluginInfo,
    Reason,
    Result,
    ServiceInfo,
    ServiceType,
    TaskTypeInfo,
)
from ep_server.client.retry import Deadline, RetryPolicy
from ep_server.client.sites import TLS, Site, SiteListError, load_sites, parse_address, parse_sites
from ep_server.model import IntRange, Resources, TaskQuery

__all__ = [
    "TLS",
    "Answer",
    "ChannelPool",
    "Choice",
    "Client",
    "CredentialsError",
    "Deadline",
    "Failure",
    "FailureKind",
    "IntRange",
    "Metadata",
    "Offer",
    "PluginInfo",
    "Query",
    "RankKey",
    "Reason",
    "Resources",
    "Result",
    "RetryPolicy",
    "ServiceInfo",
    "ServiceType",
    "Site",
    "SiteListError",
    "TaskQuery",
    "TaskTypeInfo",
    "candidates",
    "choose",
    "earliest",
    "fastest",
    "load_sites",
    "most_cores",
    "most_memory",
    "parse_address",
    "parse_sites",
    "preference",
    "rank",
]
