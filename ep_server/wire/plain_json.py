"""The EP's JSON form for people: one form for ``ep ... --json`` and the
test kit (:mod:`ep_server.testing`).

It is protobuf's JSON mapping with the protocol's own field names, except
where that mapping is awkward to read or to compare:

- enum values by their short name: ``"CAPACITY"``, not
  ``"REASON_CAUSE_CAPACITY"`` (``YES``/``NO`` are already short);
- 64-bit integers as JSON numbers, not strings (``"memory": {"max":
  25276502016}``): Python and jq read them exactly; JavaScript's numbers hold
  integers up to 2^53, 8 PiB of memory;
- times as RFC 3339 in UTC, ``"2031-03-04T09:00:00Z"`` (as protobuf's), and
  fields at their default value left out (as protobuf's).

A client that parses protobuf JSON (``json_format.Parse``, another
language's protobuf library) uses protobuf's own mapping, which ``buf curl``
and ``grpcurl`` print. Protobuf's parser takes integers as numbers or
strings, so requests may be written in either form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["enum_prefix", "plain_json", "rfc3339"]

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
# Message types whose JSON form is protobuf's own (a Struct is any JSON).
_AS_IS = {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
}


def plain_json(message: Message) -> dict[str, Any]:
    """``message`` in the EP's JSON form for people (see the module)."""
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return _message(data, message.DESCRIPTOR)


def enum_prefix(enum: EnumDescriptor) -> str:
    """What the values of ``enum`` start with by the style guide
    (``REASON_CAUSE_`` for ``ReasonCause``), dropped in the plain form."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def rfc3339(when: datetime) -> str:
    """``when`` as protobuf's JSON writes a Timestamp: UTC, ``Z``, and
    fractions of a second only when there are some."""
    text = when.astimezone(UTC).isoformat().removesuffix("+00:00")
    return f"{text}Z"


def _message(data: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is not None:
            data[key] = _field(value, field)
    return data


def _field(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {k: _single(v, value_field) for k, v in value.items()}
    if field.is_repeated:
        return [_single(v, field) for v in value]
    return _single(value, field)


def _single(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name in _AS_IS:
            return value
        return _message(value, field.message_type)
    if field.enum_type is not None and isinstance(value, str):
        return value.removeprefix(enum_prefix(field.enum_type))
    if field.type in _INT64 and isinstance(value, str):
        return int(value)
    return value
