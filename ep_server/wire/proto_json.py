"""Protobuf's JSON mapping, as dicts, faster than ``json_format``.

:func:`message_dict` returns what ``json_format.MessageToDict(message,
preserving_proto_field_name=True)`` returns: the same keys in the same
order, the same values of the same types, so that ``json.dumps`` of either
gives the same bytes. ``MessageToDict`` looks up each field's type, name
and conversion anew for every field of every message (and a JSON-name
extension in the descriptor pool for every call that meets an enum); here
each field's conversion is worked out once, the first time the field is
met, and kept.

Only what the EP's messages hold is converted here: strings, bools,
integers, doubles, bytes, open and closed enums, messages, repeated fields
and maps of them, and the well-known ``Struct``, ``Value``, ``ListValue``,
``Timestamp`` and ``Duration``. Anything else (extensions, ``float``
fields, ``Any``, ``FieldMask``, wrappers, enum values with a custom JSON
name) and any value the mapping refuses or spells specially (a NaN or an
infinity in a ``Value``, an enum number a closed enum does not have) sends
the whole message to ``json_format`` instead, which then answers or raises
exactly as it always does. tests/wire/test_proto_json.py holds the two to
the same bytes on generated messages of every type the service answers.

:func:`parse_dict` builds what ``json_format.ParseDict`` builds, for the
requests the HTTP door reads most: an object whose members are string
fields given as strings and ``Struct`` fields given as objects (an
``Ask``'s ``tasktype`` and ``taskinfo``), with the same calls protobuf's
own parser makes on the message. Any other member, or any error, and the
request goes to ``ParseDict``, which builds it or refuses it as it always
does.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["message_dict", "parse_dict"]

M = TypeVar("M", bound=Message)
_Convert = Callable[[Any], Any]
_F = FieldDescriptor


class _Unsupported(Exception):
    """A field or value this module leaves to ``json_format``."""


def message_dict(message: Message) -> Any:
    """``json_format.MessageToDict(message, preserving_proto_field_name=True)``,
    equal in keys, their order, values and their types.

    :raises json_format.SerializeToJsonError: (or whatever ``MessageToDict``
        raises) for a message the JSON mapping cannot write.
    """
    try:
        return _message(message.DESCRIPTOR)(message)
    except Exception:  # json_format answers, or raises its own error
        return json_format.MessageToDict(message, preserving_proto_field_name=True)


#: Message type -> its conversion; filled on first use.
_MESSAGES: dict[Any, _Convert] = {}


def _message(desc: Any) -> _Convert:
    convert = _MESSAGES.get(desc)
    if convert is None:
        convert = _MESSAGES[desc] = _message_converter(desc)
    return convert


def _message_converter(desc: Descriptor) -> _Convert:
    special = _WELL_KNOWN.get(desc.full_name)
    if special is not None:
        return special
    if desc.full_name in _LEFT_TO_JSON_FORMAT or desc.file.name == "google/protobuf/wrappers.proto":
        return _unsupported
    # Field -> (JSON name, conversion), each worked out when first met (so a
    # message type that contains itself needs nothing up front).
    fields: dict[FieldDescriptor, tuple[str, _Convert]] = {}

    def convert(message: Message) -> dict[str, Any]:
        js: dict[str, Any] = {}
        for field, value in message.ListFields():
            entry = fields.get(field)
            if entry is None:
                entry = fields[field] = (field.name, _field_converter(field))
            js[entry[0]] = entry[1](value)
        return js

    return convert


def _field_converter(field: FieldDescriptor) -> _Convert:
    if field.is_extension:
        raise _Unsupported(field.full_name)
    entry = field.message_type
    if entry is not None and entry.has_options and entry.GetOptions().map_entry:
        value = _single_converter(entry.fields_by_name["value"])

        def convert_map(mapping: Any) -> dict[str, Any]:
            return {_map_key(key): value(mapping[key]) for key in mapping}

        return convert_map
    single = _single_converter(field)
    if field.is_repeated:

        def convert_repeated(values: Any) -> list[Any]:
            return [single(v) for v in values]

        return convert_repeated
    return single


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _single_converter(field: FieldDescriptor) -> _Convert:
    """The conversion of one value of ``field`` (one element, when repeated)."""
    cpp = field.cpp_type
    if cpp == _F.CPPTYPE_MESSAGE and field.message_type is not None:
        message_type = field.message_type
        return lambda message: _message(message_type)(message)
    if cpp == _F.CPPTYPE_ENUM and field.enum_type is not None:
        return _enum_converter(field.enum_type)
    if cpp == _F.CPPTYPE_STRING:
        return _bytes if field.type == _F.TYPE_BYTES else str
    if cpp == _F.CPPTYPE_BOOL:
        return bool
    if cpp in (_F.CPPTYPE_INT64, _F.CPPTYPE_UINT64):
        return str
    if cpp in (_F.CPPTYPE_INT32, _F.CPPTYPE_UINT32):
        return _same
    if cpp == _F.CPPTYPE_DOUBLE:
        return _double
    raise _Unsupported(field.full_name)  # float: json_format's shortest-float repr


def _enum_converter(enum: EnumDescriptor) -> _Convert:
    if enum.full_name == "google.protobuf.NullValue":
        return lambda value: None
    if _has_enum_json_names():
        raise _Unsupported(enum.full_name)
    names = {number: value.name for number, value in enum.values_by_number.items()}
    closed = enum.is_closed

    def convert(value: int) -> str | int:
        name = names.get(value)
        if name is not None:
            return name
        if closed:
            raise _Unsupported(f"{enum.full_name} has no value {value}")
        return value

    return convert


def _has_enum_json_names() -> bool:
    """Whether the descriptor pool has the extension that gives an enum
    value a JSON name of its own (json_format then writes that)."""
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return True


def _same(value: Any) -> Any:
    return value


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


def _double(value: float) -> float | str:
    if math.isinf(value):
        return "-Infinity" if value < 0.0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return value


def _unsupported(message: Message) -> Any:
    raise _Unsupported(message.DESCRIPTOR.full_name)


# --- Well-known types --------------------------------------------------------------


def _struct(message: Any) -> dict[str, Any]:
    fields = message.fields
    return {key: _value(fields[key]) for key in fields}


def _value(message: Any) -> Any:
    kind = message.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        number = message.number_value
        if math.isinf(number) or math.isnan(number):
            raise _Unsupported("a Value that is not a finite number")  # json_format refuses
        return number
    if kind == "string_value":
        return message.string_value
    if kind == "bool_value":
        return message.bool_value
    if kind == "struct_value":
        return _struct(message.struct_value)
    if kind == "list_value":
        return _list_value(message.list_value)
    raise _Unsupported(f"Value.{kind}")


def _list_value(message: Any) -> list[Any]:
    return [_value(v) for v in message.values]


def _json_string(message: Any) -> str:
    """Timestamp and Duration: their own JSON string, as json_format asks them."""
    text: str = message.ToJsonString()
    return text


_WELL_KNOWN: dict[str, _Convert] = {
    "google.protobuf.Struct": _struct,
    "google.protobuf.Value": _value,
    "google.protobuf.ListValue": _list_value,
    "google.protobuf.Timestamp": _json_string,
    "google.protobuf.Duration": _json_string,
}
_LEFT_TO_JSON_FORMAT = frozenset({"google.protobuf.Any", "google.protobuf.FieldMask"})


# --- JSON to messages --------------------------------------------------------------

#: The deepest JSON (the top object is level 1) :func:`parse_dict` builds
#: itself: json_format refuses messages nested 100 deep, and each level of
#: a Struct is two (a Value and a Struct or ListValue), so well short of
#: that limit the two cannot differ. Deeper bodies go to json_format.
SAFE_DEPTH = 40

_STRUCT = "google.protobuf.Struct"


def parse_dict(cls: type[M], data: dict[str, Any], depth: int) -> M:
    """``json_format.ParseDict(data, cls())``: the same message, or the same
    error.

    :param depth: how deep ``data`` nests at most (the top object is 1).
    :raises json_format.ParseError: (or whatever ``ParseDict`` raises).
    """
    if depth <= SAFE_DEPTH:
        try:
            return _parse_flat(cls, data)
        except Exception:  # json_format builds it, or raises its own error
            pass
    return json_format.ParseDict(data, cls())


#: Message type -> JSON member name -> its field: the fields parse_dict
#: sets itself, by their JSON name and their proto name (the JSON name
#: wins where they clash, as in json_format).
_FLAT_FIELDS: dict[Any, dict[str, FieldDescriptor]] = {}


def _parse_flat(cls: type[M], data: dict[str, Any]) -> M:
    desc = cls.DESCRIPTOR
    fields = _FLAT_FIELDS.get(desc)
    if fields is None:
        fields = _FLAT_FIELDS[desc] = _flat_fields(desc)
    message = cls()
    seen: set[FieldDescriptor] = set()
    for name, value in data.items():
        field = fields[name]  # KeyError: a member json_format must judge
        if field in seen:
            raise _Unsupported(f"{field.name} given twice")
        seen.add(field)
        if field.cpp_type == _F.CPPTYPE_STRING and type(value) is str:
            setattr(message, field.name, value)  # a lone surrogate raises here
        elif type(value) is dict and field.message_type is not None:
            struct: Any = getattr(message, field.name)
            struct.SetInParent()
            struct.Clear()
            struct.update(value)
        else:
            raise _Unsupported(name)
    return message


def _flat_fields(desc: Any) -> dict[str, FieldDescriptor]:
    """The string and Struct fields of ``desc`` outside any oneof."""
    flat = [
        f
        for f in desc.fields
        if not f.is_repeated
        and f.containing_oneof is None
        and (
            f.type == _F.TYPE_STRING
            or (f.message_type is not None and f.message_type.full_name == _STRUCT)
        )
    ]
    names = {f.name: f for f in desc.fields}
    names.update({f.json_name: f for f in desc.fields})
    return {name: f for name, f in names.items() if f in flat}
