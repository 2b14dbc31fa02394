"""ep_server.wire.proto_json against protobuf's own json_format.

The HTTP door's ``message_json`` must write the bytes it wrote with
``json_format.MessageToDict`` and ``json.dumps``: checked on generated
messages of every type of the service's proto and of ``All``, a test
message with every kind of field proto_json converts (compiled here). Those
messages never need json_format: the fast path alone must write them. The
rest, the fields and values proto_json leaves to json_format (``Other``'s
float, wrapper, Any and FieldMask fields; NaN and infinities in a Struct;
Timestamps and Durations out of range), must come out as json_format's
bytes or as its error.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_tools import protoc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ep_server.errors import InvalidArgument
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.wire import proto_json
from ep_server.wire.http_json import message_json, request_from_http

F = FieldDescriptor

#: Every message type of the service's proto, requests and answers.
EP_TYPES = sorted(pb.DESCRIPTOR.message_types_by_name)

ALL_TYPES = """
syntax = "proto3";
package ep.test.protojson;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum E { E_ZERO = 0; E_ONE = 1; E_TWO = 2; }

// Every kind of field proto_json converts itself.
message All {
  double d = 1; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5;
  uint64 u64 = 6; sint32 s32 = 7; sint64 s64 = 8; fixed32 f32 = 9;
  fixed64 f64 = 10; sfixed32 sf32 = 11; sfixed64 sf64 = 12; bool b = 13;
  string s = 14; bytes by = 15; E e = 16; All child = 17;
  repeated double rd = 18; repeated int64 ri64 = 19; repeated bytes rby = 20;
  repeated E re = 21; repeated All rchild = 22; repeated string rs = 23;
  map<bool, string> mb = 24; map<int32, All> mi = 25; map<string, double> ms = 26;
  map<uint64, E> mu = 27; map<sint64, bytes> msb = 28;
  optional int32 oi = 29; optional string os = 30;
  oneof choice { string cs = 31; All cm = 32; }
  google.protobuf.Struct st = 33; google.protobuf.Value v = 34;
  google.protobuf.ListValue lv = 35; google.protobuf.Timestamp ts = 36;
  google.protobuf.Duration du = 37; google.protobuf.NullValue nv = 38;
  repeated google.protobuf.Timestamp rts = 39; map<string, google.protobuf.Value> mv = 40;
}

// Fields proto_json leaves to json_format.
message Other {
  All all = 1; float f = 2; repeated float rf = 3;
  google.protobuf.Int64Value w64 = 4; google.protobuf.Any any = 5;
  google.protobuf.FieldMask fm = 6;
}
"""

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
KEYS = st.one_of(TEXT, st.sampled_from(["endpoint", "image", "", "é", "\x00", "a\nb"]))
INTS = {
    F.CPPTYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    F.CPPTYPE_UINT32: st.integers(0, 2**32 - 1),
    F.CPPTYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT64: st.integers(0, 2**64 - 1),
}
EDGE_FLOATS = st.sampled_from([0.0, -0.0, 1.5, 2.0, 1e300, 5e-324, 2**53 + 1.0, 1e16])
FINITE = st.floats(allow_nan=False, allow_infinity=False) | EDGE_FLOATS
ANY_FLOAT = st.floats() | EDGE_FLOATS | st.sampled_from([math.nan, math.inf, -math.inf])


def json_values(wild: bool) -> st.SearchStrategy[Any]:
    """JSON-like values for a Struct; ``wild``: with NaN and infinities."""
    numbers = st.integers(-(2**60), 2**60) | (ANY_FLOAT if wild else FINITE)
    return st.recursive(
        st.none() | st.booleans() | numbers | TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=8,
    )


TAME_JSON, WILD_JSON = json_values(False), json_values(True)


def reference(message: Message) -> bytes:
    """What the HTTP door wrote before proto_json: json_format's dict, dumped."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def fast_path(message: Message) -> bytes:
    """proto_json's own conversion, dumped; never json_format's."""
    data = proto_json._message(message.DESCRIPTOR)(message)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def outcome(write: Any, message: Message) -> tuple[str, Any]:
    try:
        return "ok", write(message)
    except Exception as exc:  # the same error, or the same bytes
        return type(exc).__name__, str(exc)


@pytest.fixture(scope="module")
def test_types(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Descriptor]:
    """``All`` and ``Other``, compiled with protoc into a pool of their own."""
    tmp = tmp_path_factory.mktemp("proto_json")
    (tmp / "all.proto").write_text(ALL_TYPES)
    wkt = str(resources.files("grpc_tools") / "_proto")
    out = tmp / "all.pb"
    args = ["protoc", f"-I{tmp}", f"-I{wkt}", "--include_imports", f"--descriptor_set_out={out}"]
    assert protoc.main([*args, str(tmp / "all.proto")]) == 0
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes()).file:
        pool.Add(file)
    return {
        name: pool.FindMessageTypeByName(f"ep.test.protojson.{name}") for name in ("All", "Other")
    }


# --- Generated messages ------------------------------------------------------------

_MESSAGES: dict[tuple[Descriptor, int, bool], st.SearchStrategy[Message]] = {}


def messages(desc: Descriptor, wild: bool = False, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type ``desc`` with any subset of their fields set, three
    levels deep; ``wild``: with values the JSON mapping refuses or that
    proto_json leaves to json_format."""
    key = (desc, depth, wild)
    if key not in _MESSAGES:
        known = _well_known(desc, wild)
        _MESSAGES[key] = known if known is not None else _messages(desc, wild, depth)
    return _MESSAGES[key]


def _messages(desc: Descriptor, wild: bool, depth: int) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(desc)
    if depth > 2:
        return st.just(cls())
    fields = {f.name: _field_values(f, wild, depth) for f in desc.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _build(cls: Any, values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            for item in value:
                if isinstance(item, Message):
                    target.add().CopyFrom(item)
                else:
                    target.append(item)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _field_values(field: FieldDescriptor, wild: bool, depth: int) -> st.SearchStrategy[Any]:
    if _is_map(field):
        entry = field.message_type
        keys = _single(entry.fields_by_name["key"], wild, depth)
        return st.dictionaries(
            keys, _single(entry.fields_by_name["value"], wild, depth), max_size=3
        )
    if field.is_repeated:
        return st.lists(_single(field, wild, depth), max_size=3)
    return _single(field, wild, depth)


def _single(field: FieldDescriptor, wild: bool, depth: int) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp == F.CPPTYPE_MESSAGE:
        message_type = field.message_type
        return st.deferred(lambda: messages(message_type, wild, depth + 1))
    if cpp == F.CPPTYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-3, 1000)  # open enums keep unknown numbers
    if cpp == F.CPPTYPE_STRING:
        return st.binary(max_size=8) if field.type == F.TYPE_BYTES else TEXT
    if cpp == F.CPPTYPE_BOOL:
        return st.booleans()
    if cpp in INTS:
        return INTS[cpp]
    if cpp == F.CPPTYPE_FLOAT:
        return st.floats(width=32) | st.sampled_from([0.1, math.nan, -math.inf])
    return ANY_FLOAT  # a double field spells NaN and the infinities as strings


def _well_known(desc: Descriptor, wild: bool) -> st.SearchStrategy[Message] | None:
    name, values = desc.full_name, WILD_JSON if wild else TAME_JSON
    seconds = st.integers(-62135596800, 253402300799)  # years 1 to 9999
    if wild:
        seconds |= st.integers(-(2**40), 2**40)
    if name == "google.protobuf.Struct":
        return st.dictionaries(KEYS, values, max_size=4).map(lambda d: _of(desc, "update", d))
    if name == "google.protobuf.Value":
        return values.map(lambda v: _value(desc, v))
    if name == "google.protobuf.ListValue":
        return st.lists(values, max_size=3).map(lambda v: _of(desc, "extend", v))
    if name == "google.protobuf.Timestamp":
        nanos = st.sampled_from([0, 1, 1000, 1_000_000, 999_999_999]) | st.integers(0, 10**9 - 1)
        return st.builds(GetMessageClass(desc), seconds=seconds, nanos=nanos)
    if name == "google.protobuf.Duration":
        nanos = st.sampled_from([0, 1, 1000, 1_000_000]) | st.integers(0, 10**9 - 1)
        return st.builds(GetMessageClass(desc), seconds=st.integers(0, 315576000000), nanos=nanos)
    if name == "google.protobuf.Int64Value":
        return st.builds(GetMessageClass(desc), value=INTS[F.CPPTYPE_INT64])
    if name == "google.protobuf.Any":
        packed = st.sampled_from([None, pb.AskRequest(tasktype="uri://x"), pb.Range(max=2)])
        return packed.map(lambda m: _of(desc, "Pack", m) if m else GetMessageClass(desc)())
    if name == "google.protobuf.FieldMask":
        paths = st.lists(st.sampled_from(["a", "b.c", "d_e"]), max_size=3)
        return st.builds(GetMessageClass(desc), paths=paths)
    return None


def _of(desc: Descriptor, method: str, value: Any) -> Message:
    message: Message = GetMessageClass(desc)()
    getattr(message, method)(value)
    return message


def _value(desc: Descriptor, data: Any) -> Message:
    message: Any = GetMessageClass(desc)()
    if isinstance(data, dict):
        message.struct_value.update(data)
    elif isinstance(data, list):
        message.list_value.extend(data)
    elif data is None:
        message.null_value = 0  # NULL_VALUE
    elif isinstance(data, bool):
        message.bool_value = data
    elif isinstance(data, str):
        message.string_value = data
    else:
        message.number_value = data
    return message


# --- The properties ----------------------------------------------------------------

CHECKS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("name", EP_TYPES)
@CHECKS
@given(data=st.data())
def test_the_services_messages_are_written_as_json_format_writes_them(
    name: str, data: st.DataObject
) -> None:
    message = data.draw(messages(pb.DESCRIPTOR.message_types_by_name[name]))
    assert fast_path(message) == reference(message)
    assert message_json(message) == reference(message)


@CHECKS
@given(data=st.data())
def test_every_kind_of_field_is_written_as_json_format_writes_it(
    test_types: dict[str, Descriptor], data: st.DataObject
) -> None:
    message = data.draw(messages(test_types["All"]))
    assert fast_path(message) == reference(message)
    assert message_json(message) == reference(message)


@pytest.mark.parametrize("name", ["Other", "All", "AskResponse", "GetBookingResponse"])
@CHECKS
@given(data=st.data())
def test_what_proto_json_leaves_is_json_format_s_bytes_or_error(
    test_types: dict[str, Descriptor], name: str, data: st.DataObject
) -> None:
    desc = test_types.get(name) or pb.DESCRIPTOR.message_types_by_name[name]
    message = data.draw(messages(desc, wild=True))
    assert outcome(message_json, message) == outcome(reference, message)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_number_json_cannot_hold_in_a_struct_is_json_format_s_error(bad: float) -> None:
    answer = pb.AskResponse(responseword=pb.YES)
    answer.offers.add(servicetype="uri://x").serviceinfo.update({"n": [1, {"bad": bad}]})
    with pytest.raises(json_format.SerializeToJsonError) as raised:
        reference(answer)
    with pytest.raises(json_format.SerializeToJsonError) as ours:
        message_json(answer)
    assert str(ours.value) == str(raised.value)


def test_the_eps_answers_never_ask_json_format(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = pb.AskResponse(responseword=pb.YES)
    offer = answer.offers.add(servicetype="uri://docker-uws", plugin="docker", id="o-1")
    offer.serviceinfo.update({"endpoint": "http://example.org/dkuws", "ports": [80, 443.5]})
    offer.resources.cores.max = 2
    offer.resources.memory.min = 0
    offer.expire_time.FromSeconds(1_800_000_000)
    offer.slot.start.FromNanoseconds(1_800_000_000_123_000_000)
    offer.hold["cores"] = 2
    answer.reasons.add(code="C", cause=pb.REASON_CAUSE_CAPACITY, retryable=True)
    expected = reference(answer)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json_format was asked")

    monkeypatch.setattr(proto_json.json_format, "MessageToDict", refused)
    assert message_json(answer) == expected


# --- JSON to messages --------------------------------------------------------------

REQUEST_TYPES = sorted(n for n in pb.DESCRIPTOR.message_types_by_name if n.endswith("Request"))
#: Member names: every request field's proto and JSON name, and some no field has.
MEMBERS = st.sampled_from(
    sorted(
        {f.name for n in REQUEST_TYPES for f in pb.DESCRIPTOR.message_types_by_name[n].fields}
        | {
            f.json_name
            for n in REQUEST_TYPES
            for f in pb.DESCRIPTOR.message_types_by_name[n].fields
        }
        | {"taskInfo", "task_type", "", "[ext]"}
    )
)
#: What json.loads gives: no tuples, no sets; lone surrogates, NaN, huge integers.
LOADED = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400)])
    | ANY_FLOAT
    | TEXT
    | st.sampled_from(["\ud800", "a\udfff", "uri://docker-container"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)


def parsed(parse: Any, cls: Any, data: dict[str, Any]) -> tuple[str, Any]:
    """The message built (serialized, with its present fields), or the error."""
    try:
        message = parse(cls, data)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    present = [f.name for f, _ in message.ListFields()]
    return "ok", (message.SerializeToString(deterministic=True), present)


def json_format_parse(cls: Any, data: dict[str, Any]) -> Message:
    message: Message = json_format.ParseDict(data, cls())
    return message


def fast_parse(cls: Any, data: dict[str, Any]) -> Message:
    return proto_json.parse_dict(cls, data, depth=proto_json.SAFE_DEPTH)


@pytest.mark.parametrize("name", REQUEST_TYPES)
@CHECKS
@given(data=st.dictionaries(MEMBERS, LOADED, max_size=4))
def test_a_request_is_built_as_json_format_builds_it(name: str, data: dict[str, Any]) -> None:
    cls = GetMessageClass(pb.DESCRIPTOR.message_types_by_name[name])
    assert parsed(fast_parse, cls, data) == parsed(json_format_parse, cls, data)


@CHECKS
@given(
    tasktype=TEXT | st.sampled_from(["uri://docker-container", "\ud800"]),
    taskinfo=st.dictionaries(KEYS, LOADED, max_size=4),
)
def test_an_ask_is_built_as_json_format_builds_it(tasktype: str, taskinfo: dict[str, Any]) -> None:
    data = {"tasktype": tasktype, "taskinfo": taskinfo}
    assert parsed(fast_parse, pb.AskRequest, data) == parsed(json_format_parse, pb.AskRequest, data)


def test_the_seed_ask_never_asks_json_format(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"tasktype": "uri://docker-container", "taskinfo": {"image": "docker.io/example:1.0"}}
    expected = json_format.ParseDict(data, pb.AskRequest())

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json_format was asked")

    monkeypatch.setattr(proto_json.json_format, "ParseDict", refused)
    assert proto_json.parse_dict(pb.AskRequest, data, 3) == expected
    assert proto_json.parse_dict(pb.AskRequest, {"taskinfo": {}}, 2).HasField("taskinfo")


def test_a_body_deeper_than_is_safe_goes_to_json_format() -> None:
    deep: Any = "x"
    for _ in range(60):
        deep = {"k": deep}
    data = {"tasktype": "t", "taskinfo": deep}
    expected = parsed(json_format_parse, pb.AskRequest, data)
    assert expected[0] == "ParseError"  # json_format's recursion limit
    parse = proto_json.parse_dict
    assert parsed(lambda c, d: parse(c, d, depth=62), pb.AskRequest, data) == expected


def test_a_query_nested_deeper_than_is_safe_goes_to_json_format() -> None:
    """Query parameters nest as deep as their dots, whatever the body limit."""
    name = "taskinfo." + ".".join(["k"] * 60)
    with pytest.raises(json_format.ParseError, match="too deep"):
        json_format.ParseDict(
            {"taskinfo": json.loads('{"k":' * 60 + '"v"' + "}" * 60)}, pb.AskRequest()
        )
    with pytest.raises(InvalidArgument, match="too deep"):
        request_from_http(pb.AskRequest, "AskRequest", None, {}, [(name, "v")], 36)
