"""Explaining an ``AskRequest`` that protobuf refused to decode.

protobuf's decoder refuses a whole message for one bad part (a taskinfo
nested past its recursion limit, a field whose bytes are garbage), and says
little about which. To name the bad fields, :func:`diagnose` splits the
request's top level by hand, decodes each field on its own, and validates
what decodes exactly as a decodable request would be validated (with the
validators :mod:`ep_server.wire` hands it). If every part decodes alone, the
whole failed on depth: the taskinfo, one level deeper inside AskRequest, is
to blame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from ep_server.errors import FieldViolation
from ep_server.pb import execution_planner_pb2 as pb

__all__ = ["diagnose"]

#: A validator of one decoded top-level field: appends what is wrong.
Validator = Callable[[Any, list[FieldViolation]], object]

# AskRequest's top-level fields by number, and the message type of each
# length-delimited part (tasktype, field 1, is a string).
_FIELDS = {1: "tasktype", 2: "taskinfo", 3: "resources", 4: "schedule"}
_PARTS: dict[int, Any] = {2: struct_pb2.Struct, 3: pb.Resources, 4: pb.Schedule}

_TOO_DEEP = (
    "could not be decoded: nested deeper than protobuf's decoder allows "
    "(this site accepts {} levels)"
)


def diagnose(
    data: bytes, error: str, validators: Mapping[str, Validator], depth: int
) -> list[FieldViolation]:
    """What is wrong with the AskRequest ``data``, field by field.

    :param error: what protobuf said, for when nothing more precise is found.
    :param validators: field name -> how that field is validated.
    :param depth: the deepest taskinfo nesting this site accepts.
    """
    try:
        fields = _shallow_fields(data)
    except ValueError:
        return [FieldViolation("", f"not a valid AskRequest: {error}")]
    bad: list[FieldViolation] = []
    try:
        validators["tasktype"](fields.get(1, b"").decode("utf-8"), bad)
    except UnicodeDecodeError:
        bad.append(FieldViolation("tasktype", "is not valid UTF-8"))
    parts = {n: _decode_part(n, raw, bad, depth) for n, raw in fields.items() if n in _PARTS}
    for number in sorted(parts):
        if parts[number] is not None:
            validators[_FIELDS[number]](parts[number], bad)
    if not bad and 2 in fields:
        bad.append(FieldViolation("taskinfo", _TOO_DEEP.format(depth)))
    return bad or [FieldViolation("", f"not a valid AskRequest: {error}")]


def _decode_part(number: int, data: bytes, bad: list[FieldViolation], depth: int) -> Any:
    try:
        return _PARTS[number].FromString(data)
    except DecodeError:
        name = _FIELDS[number]
        if number == 2:
            bad.append(FieldViolation(name, _TOO_DEEP.format(depth) + " or malformed"))
        else:
            bad.append(FieldViolation(name, "could not be decoded"))
        return None


def _shallow_fields(data: bytes) -> dict[int, bytes]:
    """Split a message's top level into {field number: last value's bytes},
    keeping only the length-delimited fields named in ``_FIELDS`` and
    skipping the rest."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if number in _FIELDS:
                fields[number] = data[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise ValueError("truncated message")
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
