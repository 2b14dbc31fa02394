"""Configuration problems in plain words, each naming where it came from.

pydantic says "Extra inputs are not permitted" and "Value error, ..."; an
operator wants "unknown key" and the message itself, and wants to know
whether to fix the file (``server.listen: ... (in ep.toml)``) or an
environment variable (``plugins.deadline: ... (set by
$EP_PLUGINS__DEADLINE)``). :func:`describe_problems` turns a
:class:`pydantic.ValidationError` into such lines, for the EP's own settings
and for each plugin's section alike.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

__all__ = ["describe_problems", "origin_of", "plain_message", "problem_line"]

# pydantic's error types, in an operator's words; {..} from the error's ctx.
_PLAIN = {
    "extra_forbidden": "unknown key",
    "missing": "required, but not set",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "expected {expected}",
    "enum": "expected {expected}",
    "string_too_short": "must not be empty",
}
# Errors whose (short, scalar) input is worth echoing: "got 'abc'".
_ECHO = {"float_parsing", "int_parsing", "int_from_float", "bool_parsing", "literal_error", "enum"}


def plain_message(err: ErrorDetails, known: Sequence[str] = ()) -> str:
    """One pydantic error in plain words; ``known``: the keys allowed where an
    unknown key was found, to suggest the nearest."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", err["msg"]))
    elif kind in _PLAIN:
        text = _PLAIN[kind].format(**{k: str(v) for k, v in ctx.items()})
    else:
        text = err["msg"]
    value = err.get("input")
    if kind in _ECHO and isinstance(value, str | int | float) and len(repr(value)) <= 40:
        text += f", got {value!r}"
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        text += f" (did you mean {near[0]}?)" if near else ""
        text += f"; known here: {', '.join(known)}" if known and not near else ""
    return text


def origin_of(key: str, origins: Mapping[str, str], source: str) -> str:
    """Where ``key`` (dotted) was set: the environment variables or flags
    that set it, a table above it or keys within it, else the file
    (``source``)."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:end]))
        if found:
            return found
    within = sorted({o for k, o in origins.items() if k.startswith(f"{key}.")})
    return ", ".join(within) if within else source


def describe_problems(
    exc: ValidationError,
    *,
    prefix: str = "",
    origins: Mapping[str, str] | None = None,
    source: str = "",
    model: type[BaseModel] | None = None,
) -> list[str]:
    """One line per error, as :func:`problem_line` writes it.

    :param prefix: put before each key (``plugin.<name>.`` for a plugin's).
    :param model: the model validated, for "did you mean" on unknown keys.
    """
    lines = []
    for err in exc.errors():
        key = prefix + ".".join(str(part) for part in err["loc"])
        why = plain_message(err, _known_keys(model, err["loc"]) if model else ())
        lines.append(problem_line(key, why, origins or {}, source))
    return lines


def problem_line(key: str, why: str, origins: Mapping[str, str], source: str) -> str:
    """``  <key>: <why> (<where>)``: where is the file, or the environment
    variable (``$EP_X``) or flag that set the key."""
    where = origin_of(key, origins, source)
    if not where:
        return f"  {key}: {why}"
    if where == source:
        return f"  {key}: {why} (in {where})"
    return f"  {key}: {why} (set by {where})"


def _known_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys of the table at ``loc[:-1]`` in ``model``, when it is a model."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (inspect.isclass(annotation) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name, field in model.model_fields.items() if not field.exclude]
