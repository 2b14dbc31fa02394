"""Request bodies the HTTP door reads beyond proto3 JSON: YAML (safely),
and the media types that say which.

Shared by the IVOA note's ``POST /accept`` (:mod:`ep_server.http.note`)
and the ExecutionBroker routes (:mod:`ep_server.http.broker`).

YAML is read with the safe loader less two things: anchors and aliases are
refused (a few bytes of aliases can stand for billions of values), and times
stay text (as JSON has them: a Timestamp field reads RFC 3339 text). Before
the document is built, its depth is checked on PyYAML's event stream, which
is parsed without recursion (its composer recurses once per level), so a
deeply nested body is refused with a 400 naming the top-level key it is
under, never with a RecursionError.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.wire.http_json import JSON_DEPTH_SLACK, json_too_deep

__all__ = ["JSON_TYPES", "YAML_TYPES", "as_json", "is_json", "load_json", "load_yaml"]

#: Media types of JSON bodies (and any ``+json`` one).
JSON_TYPES = ("application/json",)
#: Media types of YAML bodies.
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def is_json(content_type: str) -> bool:
    """Whether a body of ``content_type`` is JSON."""
    return content_type in JSON_TYPES or content_type.endswith("+json")


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases and with times left
    as text."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def _yaml_int(loader: _NoAliasLoader, node: yaml.ScalarNode) -> int | str:
    """A YAML integer, with two of YAML 1.1's readings left out: base 60
    (``1:30`` is 90 there, and a long one costs time quadratic in its
    length) is text, as in YAML 1.2 and JSON; and an integer longer than
    Python converts (4300 digits) is refused as bad YAML."""
    text = loader.construct_scalar(node)
    if ":" in text:
        return text
    try:
        value: int = loader.construct_yaml_int(node)
    except ValueError:
        limit = sys.get_int_max_str_digits()
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of more than {limit} digits", node.start_mark
        ) from None
    return value


_NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _yaml_int)
_NoAliasLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(
    text: bytes | str, field: str, max_depth: int, what: str, nested: str = "taskinfo"
) -> Any:
    """The YAML document ``text`` (a body when ``field`` is "", else that
    form field's text), no deeper than ``max_depth`` levels.

    :param what: the request's name in errors (``"AskRequest"``).
    :param nested: the top-level key whose depth is the taskinfo limit
        (``max_depth`` less :data:`JSON_DEPTH_SLACK` for a body): a body too
        deep under it is refused naming it and that limit.
    :raises InvalidArgument: naming the field, for text that is not YAML
        or is nested too deeply.
    """
    try:
        deep = _too_deep(text, max_depth)
        if deep is not None:
            if field:
                deep = field
            if deep == nested:
                limit = max_depth - (JSON_DEPTH_SLACK if not field else 0)
                found = FieldViolation(nested, f"is nested deeper than {limit} levels")
            else:
                found = FieldViolation(deep, "is nested too deeply")
            raise InvalidArgument(what, [found])
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1} column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        found = FieldViolation(field, f"is not valid YAML: {problem}{at}")
        raise InvalidArgument(what, [found]) from None
    except RecursionError:
        raise InvalidArgument(what, [FieldViolation(field, "is nested too deeply")]) from None


def load_json(text: bytes, max_depth: int, what: str, nested: str = "taskinfo") -> Any:
    """The JSON document ``text``, no deeper than ``max_depth`` levels
    (see :func:`load_yaml` for ``nested``).

    :raises InvalidArgument: for text that is not JSON or is nested too deeply.
    """
    try:
        data = json.loads(text) if text.strip() else None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(what, [FieldViolation("", f"is not UTF-8: {exc.reason}")]) from None
    except json.JSONDecodeError as exc:
        found = FieldViolation(
            "", f"is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        )
        raise InvalidArgument(what, [found]) from None
    except RecursionError:
        raise InvalidArgument(what, [FieldViolation("", "is nested too deeply")]) from None
    deep = json_too_deep(data, max_depth)
    if deep is not None:
        if deep == nested:
            limit = max_depth - JSON_DEPTH_SLACK
            found = FieldViolation(nested, f"is nested deeper than {limit} levels")
        else:
            found = FieldViolation(deep, "is nested too deeply")
        raise InvalidArgument(what, [found])
    return data


def _too_deep(text: bytes | str, max_depth: int) -> str | None:
    """The top-level key under which the YAML ``text`` nests deeper than
    ``max_depth`` levels ("" when the top is not a mapping), or None.
    Refuses aliases on the way."""
    depth, key, expecting_key, top_is_mapping = 0, "", True, False
    for event in yaml.parse(text, Loader=_NoAliasLoader):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases are not accepted",
                event.start_mark,  # type: ignore[arg-type]
            )
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth == 1:
                top_is_mapping = isinstance(event, yaml.MappingStartEvent)
            if depth > max_depth:
                return key if top_is_mapping else ""
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
            if depth == 1:
                expecting_key = True
        elif isinstance(event, yaml.ScalarEvent) and depth == 1 and top_is_mapping:
            if expecting_key:
                key = event.value
            expecting_key = not expecting_key
    return None


def as_json(data: Any, field: str, what: str) -> bytes:
    """``data`` (read from YAML) as JSON text.

    :raises InvalidArgument: naming ``field``, for keys YAML allows and JSON
        does not, or nesting too deep to write.
    """
    try:
        return json.dumps(data, allow_nan=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            what, [FieldViolation(field, f"cannot be read as JSON: {exc}")]
        ) from None
    except RecursionError:
        raise InvalidArgument(what, [FieldViolation(field, "is nested too deeply")]) from None
