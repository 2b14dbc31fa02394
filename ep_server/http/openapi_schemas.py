"""JSON Schemas of protobuf messages in their proto3 JSON form, as the HTTP
door writes and reads them.

A message has up to three schemas under ``components/schemas``, each named
for its form (a ``-`` never occurs in a proto name, so no name can clash):

- ``ivoa.ep.v1.Offer``, the **output** form: what the server writes, exactly:
  proto field names (``expire_time``), 64-bit integers as decimal strings,
  enum values by name, no other property. Fields at their default value are
  left out, so no property is required.
- ``ivoa.ep.v1.AskRequest-input``, the **input** form, for what a request
  carries: what proto3 JSON parsing accepts: each field by its proto name or
  its lowerCamelCase JSON name (not both), integers as numbers or decimal
  strings, enum values by name or number, ``null`` for a field left at its
  default; still no unknown property.
- ``google.rpc.BadRequest-any``, the form **packed** in a
  ``google.protobuf.Any``: its ``"@type"`` beside its fields. An ``Any`` is
  one of the packed messages the builder is given.

The well-known types have their own JSON forms, the same both ways, under
their full names: a ``Timestamp`` is an RFC 3339 string, a ``Duration`` a
number of seconds ending in ``s``, a ``Struct`` any object, a ``Value`` any
JSON value.

The schemas are built from ``FileDescriptorProto``s compiled with source
info, so each schema and property carries its proto comment.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from google.protobuf import descriptor_pb2

__all__ = ["Form", "ProtoIndex", "Schema", "Schemas"]

Schema = dict[str, Any]
Form = Literal["output", "input"]

_F = descriptor_pb2.FieldDescriptorProto
_Kind: TypeAlias = "descriptor_pb2.FieldDescriptorProto.Type.ValueType"
_INT32 = (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32)
_UINT32 = (_F.TYPE_UINT32, _F.TYPE_FIXED32)
_INT64 = (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64)
_UINT64 = (_F.TYPE_UINT64, _F.TYPE_FIXED64)
# Each integer type: its JSON Schema format and range.
_INTEGERS = {
    **{t: ("int32", -(2**31), 2**31 - 1) for t in _INT32},
    **{t: ("uint32", 0, 2**32 - 1) for t in _UINT32},
    **{t: ("int64", -(2**63), 2**63 - 1) for t in _INT64},
    **{t: ("uint64", 0, 2**64 - 1) for t in _UINT64},
}
_DIGITS = {"type": "string", "pattern": "^-?[0-9]+$"}
_PLAIN = {
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_NOT_FINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}

_ANY = "google.protobuf.Any"
#: The well-known types whose JSON form is not their fields' (proto3 JSON
#: mapping); the same form both ways.
WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        # RFC 3339 as protobuf reads it: upper-case T and Z, at most 9 digits.
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
        r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$",
        "description": "A time in RFC 3339 form, written in UTC with 0, 3, 6 or 9 fractional"
        ' digits ("2031-03-04T09:00:00Z"); read with any offset.',
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": 'A duration: seconds, with up to 9 fractional digits, and "s"'
        ' ("3600s", "0.100s").',
    },
    "google.protobuf.Struct": {"type": "object", "description": "Any JSON object."},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "description": "Any JSON array."},
    "google.protobuf.NullValue": {"type": "null", "description": "JSON null."},
}


def _comment(text: str) -> str:
    """A proto comment as a description: its lines, dedented."""
    return textwrap.dedent(text).strip()


@dataclass
class ProtoIndex:
    """Messages and enums by full name, and the comments of every element
    (keyed by full name; a field's, enum value's or method's by ``Parent.name``)."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> ProtoIndex:
        # A comment's location is a path of field numbers and indexes down
        # from the file: message_type 4, enum_type 5, service 6; in a
        # message, field 2, nested_type 3, enum_type 4; in an enum, value 2;
        # in a service, method 2 (descriptor.proto).
        index = cls()
        for file in files:
            said = {
                tuple(where.path): _comment(where.leading_comments)
                for where in file.source_code_info.location
                if where.leading_comments
            }
            scope = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                index._message(f"{scope}{message.name}", message, (4, i), said)
            for i, enum in enumerate(file.enum_type):
                index._enum(f"{scope}{enum.name}", enum, (5, i), said)
            for i, service in enumerate(file.service):
                name = f"{scope}{service.name}"
                index._say(name, (6, i), said)
                for j, method in enumerate(service.method):
                    index._say(f"{name}.{method.name}", (6, i, 2, j), said)
        return index

    def comment(self, name: str) -> str:
        """The comment of the element named ``name``; empty when it has none."""
        return self.comments.get(name, "")

    def _say(self, name: str, path: tuple[int, ...], said: dict[tuple[int, ...], str]) -> None:
        if path in said:
            self.comments[name] = said[path]

    def _message(
        self,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        said: dict[tuple[int, ...], str],
    ) -> None:
        self.messages[name] = message
        self._say(name, path, said)
        for j, one in enumerate(message.field):
            self._say(f"{name}.{one.name}", (*path, 2, j), said)
        for k, nested in enumerate(message.nested_type):
            self._message(f"{name}.{nested.name}", nested, (*path, 3, k), said)
        for k, enum in enumerate(message.enum_type):
            self._enum(f"{name}.{enum.name}", enum, (*path, 4, k), said)

    def _enum(
        self,
        name: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
        said: dict[tuple[int, ...], str],
    ) -> None:
        self.enums[name] = enum
        self._say(name, path, said)
        for j, value in enumerate(enum.value):
            self._say(f"{name}.{value.name}", (*path, 2, j), said)


def ref(name: str) -> Schema:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


class Schemas:
    """Builds component schemas on demand: :meth:`ref` adds the schema it
    names, and every schema that one reaches, to :attr:`components`.

    :param packed: the messages a ``google.protobuf.Any`` may hold.
    """

    def __init__(self, index: ProtoIndex, packed: Sequence[str] = ()) -> None:
        self.index = index
        self.packed = packed
        self.components: dict[str, Schema] = {}

    def ref(self, full_name: str, form: Form) -> Schema:
        """A reference to the ``form`` schema of a message or enum."""
        special = full_name in WELL_KNOWN or full_name in self.index.enums
        name = full_name if form == "output" or special else f"{full_name}-input"
        if name not in self.components:
            self.components[name] = {}  # taken, for messages that contain themselves
            self.components[name] = self._component(full_name, form)
        return ref(name)

    def message(self, full_name: str, form: Form, omit: Iterable[str] = ()) -> Schema:
        """The object schema of a message, without the fields in ``omit``."""
        properties: Schema = {}
        for one in self.index.messages[full_name].field:
            if one.name in omit:
                continue
            schema = self.field(one, form)
            if form == "input":
                schema = _or_null(schema)
            described = _described(schema, self.index.comment(f"{full_name}.{one.name}"))
            properties[one.name] = described
            if form == "input" and one.json_name != one.name:
                alias = f"The JSON name of `{one.name}`."
                properties[one.json_name] = {**described, "description": alias}
        schema = _described({"type": "object"}, self.index.comment(full_name))
        return {**schema, "properties": properties, "additionalProperties": False}

    def field(self, one: descriptor_pb2.FieldDescriptorProto, form: Form) -> Schema:
        """The schema of a field's value (an array or object when it repeats)."""
        entry = self.index.messages.get(one.type_name.lstrip("."))
        if entry is not None and entry.options.map_entry:
            key, value = entry.field
            schema: Schema = {"type": "object", "additionalProperties": self._single(value, form)}
            if key.type in _INTEGERS:
                schema["propertyNames"] = {"pattern": _DIGITS["pattern"]}
            elif key.type == _F.TYPE_BOOL:
                schema["propertyNames"] = {"enum": ["true", "false"]}
            return schema
        single = self._single(one, form)
        if one.label == _F.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, one: descriptor_pb2.FieldDescriptorProto, form: Form) -> Schema:
        type_name = one.type_name.lstrip(".")
        if one.type == _F.TYPE_MESSAGE:
            return self.ref(type_name, form)
        if one.type == _F.TYPE_ENUM:
            enum = self.ref(type_name, form)
            if form == "output" or type_name in WELL_KNOWN:
                return enum
            return {"anyOf": [enum, {"type": "integer", **_range(_F.TYPE_INT32)}]}
        return _scalar(one.type, form)

    def _component(self, full_name: str, form: Form) -> Schema:
        if full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[full_name])
        if full_name in self.index.enums:
            return self._enum(full_name)
        if full_name == _ANY:
            return {
                "description": "A message packed with its type: one of these.",
                "oneOf": [self._packed(name) for name in self.packed],
            }
        if full_name.startswith("google.protobuf."):
            raise ValueError(f"no JSON form for {full_name} here; add it to WELL_KNOWN")
        return self.message(full_name, form)

    def _packed(self, full_name: str) -> Schema:
        name = f"{full_name}-any"
        if name not in self.components:
            schema = self.message(full_name, "output")
            at_type = {"const": f"type.googleapis.com/{full_name}"}
            schema["properties"] = {"@type": at_type, **schema["properties"]}
            self.components[name] = {**schema, "required": ["@type"]}
        return ref(name)

    def _enum(self, full_name: str) -> Schema:
        enum = self.index.enums[full_name]
        values = [self.index.comment(f"{full_name}.{v.name}") or v.name for v in enum.value]
        listed = "\n".join(f"- {' '.join(text.split())}" for text in values)
        text = "\n\n".join(t for t in (self.index.comment(full_name), listed) if t)
        return {"type": "string", "enum": [v.name for v in enum.value], "description": text}


def _range(kind: _Kind) -> Schema:
    fmt, low, high = _INTEGERS[kind]
    return {"format": fmt, "minimum": low, "maximum": high}


def _scalar(kind: _Kind, form: Form) -> Schema:
    """A scalar's JSON form: 64-bit integers are strings on output; on
    input, numbers may also be strings, as protobuf's parser reads them."""
    if kind in _INTEGERS:
        number = {"type": "integer", **_range(kind)}
        if kind in _INT32 or kind in _UINT32:
            return number if form == "output" else {"anyOf": [number, _DIGITS]}
        text = {**_DIGITS, "format": _INTEGERS[kind][0]}
        return text if form == "output" else {"anyOf": [number, text]}
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        other = _NOT_FINITE if form == "output" else {"type": "string"}
        return {"anyOf": [{"type": "number"}, other]}
    return dict(_PLAIN[kind])


def _or_null(schema: Schema) -> Schema:
    """``schema`` or ``null`` (an input field left at its default)."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _described(schema: Schema, text: str) -> Schema:
    return {**schema, "description": text} if text else schema
