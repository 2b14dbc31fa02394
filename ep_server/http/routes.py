"""REST routes read from the service's ``google.api.http`` rules.

Every RPC of ``ExecutionPlannerService`` carries an HTTP rule in the proto
(AIP-127): a method, a path template and which part of the request is the
body. :func:`rest_routes` reads those rules from the descriptors at run
time, so an RPC added to the proto with a rule gets its route with no
handler written for it. The templates this service uses are the plain kind
(``/v1/bookings/{booking_id}:cancel``); the fuller template grammar
(``{name=segments/*}``, ``**``) is read too, and a rule this module cannot
serve fails at start-up rather than at the first request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

__all__ = ["RestRoute", "rest_routes"]

_METHODS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([A-Za-z_][\w.]*)(?:=([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class RestRoute:
    """One HTTP binding of an RPC."""

    #: The RPC's name (``"AcceptOffer"``).
    rpc: str
    #: Its request message class's name (``"AcceptOfferRequest"``).
    request: str
    #: The HTTP method, upper case.
    method: str
    #: The path template as the rule writes it (a metrics and log label).
    template: str
    #: The path as an aiohttp route (variables renamed ``v0``, ``v1``...,
    #: each with the regular expression of its segment pattern).
    path: str
    #: aiohttp variable name -> request field path (``"v0"`` -> ``"offer_id"``).
    variables: tuple[tuple[str, str], ...]
    #: The rule's body: ``"*"`` (the whole request), a field name, or ``""``
    #: (no body: every other field comes from the query string).
    body: str


def rest_routes(service: ServiceDescriptor) -> list[RestRoute]:
    """The routes of every HTTP rule (and additional binding) of ``service``.

    :raises ValueError: for a rule this module cannot serve.
    """
    routes = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule = options.Extensions[annotations_pb2.http]
        for binding in (rule, *rule.additional_bindings):
            routes.append(_route(method, binding))
    return routes


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> RestRoute:
    kind = rule.WhichOneof("pattern")
    if kind not in _METHODS:
        raise ValueError(
            f"{method.full_name}: HTTP rule {kind or 'without a pattern'} is not served"
        )
    template: str = getattr(rule, kind)
    variables: list[tuple[str, str]] = []

    def variable(match: re.Match[str]) -> str:
        name = f"v{len(variables)}"
        field_path, pattern = match.group(1), match.group(2) or "*"
        _check_field(method, field_path)
        variables.append((name, field_path))
        return "{" + f"{name}:{_segments_regex(pattern)}" + "}"

    literal_parts = _VARIABLE.split(template)
    if "{" in "".join(literal_parts[::3]) or "}" in "".join(literal_parts[::3]):
        raise ValueError(f"{method.full_name}: cannot read the path template {template!r}")
    path = _VARIABLE.sub(variable, template)
    if not path.startswith("/"):
        raise ValueError(f"{method.full_name}: the path template {template!r} must start with /")
    if rule.body not in ("", "*"):
        _check_field(method, rule.body)
    return RestRoute(
        rpc=method.name,
        request=method.input_type.name,
        method=kind.upper(),
        template=template,
        path=path,
        variables=tuple(variables),
        body=rule.body,
    )


def _check_field(method: MethodDescriptor, field_path: str) -> None:
    message: Any = method.input_type
    for part in field_path.split("."):
        field = message.fields_by_name.get(part) if message is not None else None
        if field is None:
            raise ValueError(f"{method.full_name}: the HTTP rule names no field {field_path!r}")
        message = field.message_type


def _segments_regex(pattern: str) -> str:
    """The regular expression of a variable's segment pattern: ``*`` is one
    segment, ``**`` any number of them, anything else literal."""
    parts = []
    for segment in pattern.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append(".+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)
