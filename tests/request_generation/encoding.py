"""The wire: ``AskRequest``, ``Struct`` and ``Value`` encoded by hand.

A request is built as an :class:`Ask` (what it holds, so the oracle can judge
it) and encoded to bytes here, not by protobuf, so it may hold what protobuf
refuses: strings that are not UTF-8 (:class:`BadUtf8`), nesting of any depth,
unknown fields, out-of-range times.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2


@dataclass(frozen=True)
class BadUtf8:
    """A string field whose bytes are not UTF-8 (protobuf refuses them)."""

    data: bytes


def varint(n: int) -> bytes:
    """A base-128 varint."""
    n &= (1 << 64) - 1  # negative int64 values: ten bytes of two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _text(value: str | BadUtf8) -> bytes:
    return value.data if isinstance(value, BadUtf8) else value.encode("utf-8")


def encode_value(value: Any) -> bytes:
    """A ``google.protobuf.Value`` from a JSON-like Python value (any depth)."""
    if value is None:
        return b"\x08\x00"
    if isinstance(value, bool):
        return b"\x20\x01" if value else b"\x20\x00"
    if isinstance(value, int | float):
        return b"\x11" + struct.pack("<d", float(value))
    if isinstance(value, str | BadUtf8):
        return length_delimited(3, _text(value))
    if isinstance(value, dict):
        return length_delimited(5, encode_struct(value))
    if isinstance(value, list):
        return length_delimited(6, b"".join(length_delimited(1, encode_value(x)) for x in value))
    raise TypeError(type(value))


def encode_struct(fields: dict[Any, Any]) -> bytes:
    """A ``google.protobuf.Struct``; keys may be :class:`BadUtf8`."""
    return b"".join(
        length_delimited(1, length_delimited(1, _text(k)) + length_delimited(2, encode_value(v)))
        for k, v in fields.items()
    )


def _seconds_nanos(value: tuple[int | None, int | None]) -> bytes:
    """A google.protobuf.Timestamp or Duration (same fields, same wire)."""
    seconds, nanos = value
    out = b"" if seconds is None else b"\x08" + varint(seconds)
    return out + (b"" if nanos is None else b"\x10" + varint(nanos))


def encode_schedule(schedule: dict[str, Any]) -> bytes:
    """The ``schedule`` block: windows of (start, end), min and max durations."""
    out = b""
    for start, end in schedule.get("windows", ()):
        window = b"" if start is None else length_delimited(1, _seconds_nanos(start))
        window += b"" if end is None else length_delimited(2, _seconds_nanos(end))
        out += length_delimited(1, window)
    for number, name in ((2, "min"), (3, "max")):
        if schedule.get(name) is not None:
            out += length_delimited(number, _seconds_nanos(schedule[name]))
    return out


@dataclass
class Ask:
    """A generated request: what it holds, so the oracle can judge it."""

    tasktype: str | BadUtf8 = ""
    taskinfo: dict[Any, Any] | None = None
    #: {"cores": {"min": int, "max": int}, "memory": {...}}, any part missing.
    resources: dict[str, dict[str, int]] | None = None
    #: Extra fields the proto does not define, already encoded.
    unknown: bytes = b""
    #: The schedule block (field 4): {"windows": [(start, end)], "min": d,
    #: "max": d}; a time is (seconds, nanos), either part may be None.
    schedule: dict[str, Any] | None = None
    _taskinfo_bytes: bytes | None = field(default=None, repr=False)

    def taskinfo_bytes(self) -> bytes:
        if self._taskinfo_bytes is None:
            self._taskinfo_bytes = encode_struct(self.taskinfo or {})
        return self._taskinfo_bytes

    def encode(self) -> bytes:
        out = length_delimited(1, _text(self.tasktype)) if self.tasktype != "" else b""
        if self.taskinfo is not None:
            out += length_delimited(2, self.taskinfo_bytes())
        if self.resources is not None:
            res = b""
            for number, name in ((1, "cores"), (2, "memory")):
                if name in self.resources:
                    rng = self.resources[name]
                    body = b"".join(
                        varint(tag) + varint(rng[end])
                        for tag, end in ((0x08, "min"), (0x10, "max"))
                        if end in rng
                    )
                    res += length_delimited(number, body)
            out += length_delimited(3, res)
        if self.schedule is not None:
            out += length_delimited(4, encode_schedule(self.schedule))
        return out + self.unknown

    def __repr__(self) -> str:  # requests can be 300 KiB: keep failures readable
        text = (
            f"Ask(tasktype={self.tasktype!r}, taskinfo={self.taskinfo!r}, "
            f"resources={self.resources!r}, schedule={self.schedule!r}, "
            f"unknown={self.unknown!r})"
        )
        return text if len(text) < 2000 else text[:1000] + f"...<{len(text)} chars>"


def nested(depth: int, via_list: bool = False) -> struct_pb2.Struct:
    """A taskinfo ``depth`` levels deep (the top-level object is level 1)."""
    top = struct_pb2.Struct()
    node = top
    for _ in range(depth - 1):
        if via_list:
            node = node.fields["a"].list_value.values.add().struct_value
            depth -= 1
        else:
            node = node.fields["a"].struct_value
    node.fields["leaf"].string_value = "x"
    return top


def taskinfo_field(taskinfo: struct_pb2.Struct) -> bytes:
    """Field 2 of AskRequest on the wire, built by hand: protobuf itself
    refuses to copy a Struct this deep into a message."""
    return length_delimited(2, taskinfo.SerializeToString())
