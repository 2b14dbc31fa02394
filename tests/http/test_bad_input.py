"""Bad HTTP input gets a 4xx ``google.rpc.Status`` JSON, never a 500 or a
hang, and never reaches a plugin: bodies past ``[http] max_body_bytes``
(413), a body its ``Content-Encoding`` does not decode (400, and the
connection closed), nesting deeper than the taskinfo limit allows however deep
(400 naming taskinfo when it is under taskinfo), malformed or non-UTF-8
JSON, a body that is not a JSON object, a field the request does not have
or of the wrong type (400 naming it), a body that is not JSON (415), a path
that does not exist (404), a method the path does not take (405 with
``Allow``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging

import pytest
from http_site import DOCKER, SEED, Reply, Site

JSON = {"Content-Type": "application/json"}


async def post_raw(
    s: Site, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/ask"
) -> Reply:
    return await s.post(path, data=body, headers=JSON if headers is None else headers)


def assert_status_json(reply: Reply, status: int, code: int) -> None:
    """``reply`` is a ``google.rpc.Status`` with gRPC code ``code``, sent
    with the HTTP status ``status`` and a message."""
    assert reply.status == status, reply.body[:500]
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json["code"] == code
    assert reply.json["message"]


async def assert_unharmed(s: Site) -> None:
    """The server answers the seed's question, and no plugin saw anything else."""
    assert (await s.post("/v1/ask", json=SEED)).json["responseword"] == "YES"
    assert all(q.taskinfo == SEED["taskinfo"] for q in s.plugins[0].calls)


async def test_a_body_past_max_body_bytes_gets_413(site):
    s = await site({"http": {"max_body_bytes": 1024}})
    big = json.dumps({**SEED, "taskinfo": {"pad": "x" * 2000}}).encode()
    reply = await post_raw(s, big)
    assert_status_json(reply, 413, 8)  # RESOURCE_EXHAUSTED
    assert reply.reason() == "BODY_TOO_LARGE"
    assert "1024" in reply.json["message"]
    # Waiting does not make a body smaller: no Retry-After, no RetryInfo.
    assert "Retry-After" not in reply.headers
    assert not [d for d in reply.json["details"] if d["@type"].endswith("RetryInfo")]
    assert reply.headers["x-request-id"]

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(4):
            yield b" " * 500

    assert_status_json(await post_raw(s, chunks()), 413, 8)
    await assert_unharmed(s)


async def test_a_compressed_body_is_limited_by_its_size_uncompressed(site):
    s = await site({"http": {"max_body_bytes": 64 * 1024}})
    padding = b'"' + b"0" * (8 * 2**20) + b'"'
    bomb = gzip.compress(b'{"tasktype": "uri://x", "taskinfo": {"pad": ' + padding + b"}}")
    assert len(bomb) < 64 * 1024
    reply = await post_raw(s, bomb, {**JSON, "Content-Encoding": "gzip"})
    assert_status_json(reply, 413, 8)
    small = gzip.compress(json.dumps(SEED).encode())
    reply = await post_raw(s, small, {**JSON, "Content-Encoding": "gzip"})
    assert reply.json["responseword"] == "YES"


@pytest.mark.parametrize("path", ["/v1/ask", "/accept"])
@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", b"not gzip at all"), ("deflate", gzip.compress(json.dumps(SEED).encode()))],
    ids=["not gzip", "gzip as deflate"],
)
async def test_a_body_its_content_encoding_cannot_decode_gets_400(
    site, caplog, path, encoding, body
):
    s = await site()
    with caplog.at_level(logging.ERROR):
        reply = await post_raw(s, body, {**JSON, "Content-Encoding": encoding}, path)
    assert_status_json(reply, 400, 3)
    [(field, description)] = reply.violations().items()
    assert (field, encoding in description) == ("", True), description
    assert reply.headers["x-request-id"]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    await assert_unharmed(s)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ],
    ids=["100k arrays", "100k arrays unclosed", "5000 objects"],
)
async def test_a_body_nested_past_any_limit_gets_400_at_once(site, body):
    s = await site()
    reply = await post_raw(s, body)
    assert_status_json(reply, 400, 3)
    assert reply.violations() in ({"": "is nested too deeply"}, {"a": "is nested too deeply"})
    await assert_unharmed(s)


@pytest.mark.parametrize("levels", [40, 5000, 100_000])
@pytest.mark.parametrize("kind", ["objects", "arrays"])
async def test_a_taskinfo_nested_too_deeply_gets_400_naming_taskinfo(site, kind, levels):
    s = await site()
    if kind == "objects":
        inner = b'{"a":' * levels + b"1" + b"}" * levels
    else:
        inner = b'{"a":' + b"[" * levels + b"]" * levels + b"}"
    body = b'{"tasktype":"' + DOCKER.encode() + b'","taskinfo":' + inner + b"}"
    reply = await post_raw(s, body)
    assert_status_json(reply, 400, 3)
    assert reply.violations() == {"taskinfo": "is nested deeper than 32 levels"}
    await assert_unharmed(s)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "is not valid JSON"),
        (b'{"tasktype": "uri://x",}', "is not valid JSON"),
        (b"\xff\xfe\x00", "is not UTF-8"),
        (b'{"tasktype": "uri://docker-container", "taskinfo": {"x": "\xe9"}}', "is not UTF-8"),
        (json.dumps(SEED).encode("utf-16"), "is not UTF-8"),
        (b'{"tasktype": "uri://x", "taskinfo": {"n": ' + b"9" * 5000 + b"}}", "is not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"uri://docker-container"', "must be a JSON object, not str"),
        (b"null", "must be a JSON object, not NoneType"),
    ],
    ids=[
        "unclosed",
        "trailing comma",
        "not utf-8",
        "latin-1 inside",
        "utf-16",
        "5000 digits",
        "array",
        "string",
        "null",
    ],
)
async def test_a_body_that_is_not_a_json_object_in_utf_8_gets_400(site, body, says):
    s = await site()
    reply = await post_raw(s, body)
    assert_status_json(reply, 400, 3)
    [(field, description)] = reply.violations().items()
    assert field == ""
    assert description.startswith(says), description
    await assert_unharmed(s)


async def test_a_byte_order_mark_is_ignored(site):
    s = await site()
    reply = await post_raw(s, b"\xef\xbb\xbf" + json.dumps(SEED).encode())
    assert reply.json["responseword"] == "YES"


@pytest.mark.parametrize(
    ("request_", "field", "says"),
    [
        ({"tasktype": DOCKER, "bogus": 1}, "bogus", "is not a field of this request"),
        ({"tasktype": DOCKER, "resources": {"gpus": 1}}, "resources.gpus", "is not a field"),
        ({"tasktype": 5}, "tasktype", "expected string"),
        ({"tasktype": DOCKER, "resources": {"cores": {"min": "x"}}}, "resources.cores.min", ""),
        ({"tasktype": DOCKER, "resources": {"cores": {"min": 1.5}}}, "resources.cores.min", ""),
        ({"tasktype": DOCKER, "taskinfo": [1]}, "taskinfo", "Struct must be in a dict"),
        ({"tasktype": DOCKER, "schedule": {"min_duration": "5"}}, "schedule.min_duration", ""),
        (
            {"tasktype": DOCKER, "schedule": {"windows": [{"start": "yesterday"}]}},
            "schedule.windows[0].start",
            "Failed to parse timestamp",
        ),
        ({"tasktype": DOCKER, "taskinfo": {"x": float("nan")}}, "taskinfo.x", "nan is not"),
    ],
    ids=[
        "unknown field",
        "unknown nested field",
        "number for a string",
        "text for an integer",
        "fraction for an integer",
        "list for taskinfo",
        "duration without unit",
        "not a timestamp",
        "NaN in taskinfo",
    ],
)
async def test_a_field_that_cannot_be_read_gets_400_naming_it(site, request_, field, says):
    s = await site()
    reply = await post_raw(s, json.dumps(request_).encode())
    assert_status_json(reply, 400, 3)
    assert list(reply.violations()) == [field]
    assert says in reply.violations()[field]
    assert reply.reason() == "INVALID_ARGUMENT"
    await assert_unharmed(s)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
async def test_a_body_that_is_not_json_gets_415(site, content_type):
    s = await site()
    reply = await post_raw(s, json.dumps(SEED).encode(), {"Content-Type": content_type})
    assert_status_json(reply, 415, 3)
    assert reply.reason() == "UNSUPPORTED_MEDIA_TYPE"
    await assert_unharmed(s)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/problem+json"]
)
async def test_json_with_parameters_or_a_json_suffix_is_json(site, content_type):
    s = await site()
    reply = await post_raw(s, json.dumps(SEED).encode(), {"Content-Type": content_type})
    assert reply.json["responseword"] == "YES"


async def test_an_empty_ask_body_is_an_empty_request(site):
    s = await site()
    reply = await post_raw(s, b"", {})
    assert_status_json(reply, 400, 3)
    assert reply.violations() == {"tasktype": "must not be empty"}


@pytest.mark.parametrize(
    "path",
    ["/nope", "/v1", "/v1/ask/more", "/v1/bookings/", "/v1/bookings/a/b", "/v1/offers/:accept"],
)
async def test_a_path_that_does_not_exist_gets_404(site, path):
    s = await site()
    reply = await s.get(path)
    assert_status_json(reply, 404, 5)
    assert reply.reason() == "NO_SUCH_ROUTE"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/ask", "POST"),
        ("PUT", "/v1/ask", "POST"),
        ("DELETE", "/v1/bookings", "GET, HEAD"),
        ("POST", "/v1/serviceinfo", "GET, HEAD"),
        ("GET", "/v1/offers/abc:accept", "POST"),
        ("OPTIONS", "/v1/ask", "POST"),
    ],
)
async def test_a_method_the_path_does_not_take_gets_405_with_allow(site, method, path, allowed):
    s = await site()
    reply = await s.request(method, path)
    assert_status_json(reply, 405, 12)  # UNIMPLEMENTED
    assert reply.headers["Allow"] == allowed
    assert reply.reason() == "METHOD_NOT_ALLOWED"


async def test_a_query_parameter_the_request_does_not_have_gets_400(site):
    s = await site()
    reply = await s.get("/v1/serviceinfo?verbose=1")
    assert_status_json(reply, 400, 3)
    assert reply.violations() == {"verbose": "is not a field of this request"}


@pytest.mark.parametrize("query", ["colour=blue", "tasktype=uri://x", "resources.gpus.min=1"])
async def test_a_query_parameter_on_a_route_whose_body_is_the_request_gets_400(site, query):
    s = await site()
    reply = await s.post(f"/v1/ask?{query}", json=SEED)
    assert_status_json(reply, 400, 3)
    assert reply.violations() == {query.split("=")[0]: "is not read: the body carries the request"}


async def test_an_integer_no_double_holds_gets_400_naming_it(site):
    s = await site()
    body = b'{"tasktype": "uri://docker-container", "taskinfo": {"a": [1, 1' + b"0" * 400 + b"]}}"
    reply = await post_raw(s, body)
    assert_status_json(reply, 400, 3)
    assert "taskinfo.a[1]" in reply.violations()


@pytest.mark.parametrize("path", ["/", "/openapi.json", "/v1/serviceinfo"])
async def test_head_is_served_wherever_get_is_without_a_body(site, path):
    s = await site()
    got, head = await s.request("GET", path), await s.request("HEAD", path)
    assert head.status == got.status == 200
    assert head.body == b""
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert head.headers["x-request-id"] != got.headers["x-request-id"]


async def test_a_request_the_http_parser_refuses_is_one_info_line_not_a_traceback(site, caplog):
    s = await site()
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    reader, writer = await asyncio.open_connection("127.0.0.1", s.running.http_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    await writer.drain()
    assert (await reader.read(12)).startswith(b"HTTP/1.")
    writer.close()
    await asyncio.sleep(0.05)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records, "aiohttp logged nothing"
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in records)
    assert "refused a malformed HTTP request from 127.0.0.1" in records[0].getMessage()
