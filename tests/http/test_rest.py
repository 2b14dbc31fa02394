"""The REST routes answer as the proto's JSON mapping says: ``POST /v1/ask``
and ``GET /v1/serviceinfo`` on a real server, input by proto field name or
lowerCamelCase JSON name, 64-bit integers as numbers or strings, output
with the proto field names and 64-bit integers as strings; every RPC's
response carries its request id (``x-request-id``), the client's own when
it sent a sane one."""

from __future__ import annotations

import re

import pytest
from http_site import DOCKER, SEED

from ep_server.pb import execution_planner_pb2 as pb

WINDOW = {"start": "2031-03-04T09:00:00Z", "end": "2031-03-04T17:00:00Z"}


async def test_the_seed_s_question_gets_yes_with_the_offer(site):
    s = await site()
    reply = await s.post("/v1/ask", json=SEED)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json == {
        "responseword": "YES",
        "offers": [
            {
                "servicetype": "uri://docker-uws",
                "serviceinfo": {"endpoint": "http://uri://docker-uws"},
                "plugin": "p0",
            }
        ],
    }
    [query] = s.plugins[0].calls
    assert query.taskinfo == {"image": "docker.io/example:1.0"}


async def test_a_task_type_nobody_claims_gets_no_with_reasons(site):
    s = await site()
    reply = await s.post("/v1/ask", json={"tasktype": "uri://no-such-type"})
    assert reply.status == 200  # a NO is an answer, not an error
    assert reply.json["responseword"] == "NO"
    [reason] = reply.json["reasons"]
    assert reason["code"] == "UNSUPPORTED_TASK_TYPE"
    assert reason["cause"] == "REASON_CAUSE_REQUEST"
    assert reason["field"] == "tasktype"
    assert "offers" not in reply.json


@pytest.mark.parametrize(
    "schedule",
    [
        {"windows": [WINDOW], "min_duration": "3600s", "max_duration": "7200s"},
        {"windows": [WINDOW], "minDuration": "3600s", "maxDuration": "7200s"},
    ],
    ids=["proto names", "json names"],
)
async def test_fields_are_read_by_proto_name_and_by_json_name(booking_site, schedule):
    reply = await booking_site.post("/v1/ask", json={**SEED, "schedule": schedule}, user="alice")
    assert reply.status == 200, reply.json
    offer = reply.json["offers"][0]
    # The output has the proto names.
    assert set(offer) >= {"id", "expire_time", "slot", "hold"}
    assert offer["slot"]["end"] > offer["slot"]["start"]
    assert offer["hold"] == {"cores": "1"}  # map<string, int64>
    assert not any(re.search("[A-Z]", key) for key in _keys(reply.json))


@pytest.mark.parametrize("memory", [2048, "2048"], ids=["number", "string"])
async def test_64_bit_integers_are_read_as_numbers_or_strings(site, memory):
    s = await site()
    request = {**SEED, "resources": {"memory": {"min": memory}, "cores": {"min": 1}}}
    assert (await s.post("/v1/ask", json=request)).status == 200
    [query] = s.plugins[0].calls
    assert query.resources.memory.min == 2048


async def test_service_info_with_proto_names_and_64_bit_integers_as_strings(site):
    s = await site()
    reply = await s.get("/v1/serviceinfo")
    assert reply.status == 200
    info = reply.json
    assert info["server_version"]
    assert info["tasktypes"] == [
        {"tasktype": DOCKER, "services": [{"servicetype": "uri://docker-uws", "plugin": "p0"}]}
    ]
    [plugin] = info["plugins"]
    assert plugin["state"] == pb.PluginState.Name(pb.PLUGIN_STATE_LOADED)
    # int64 fields (memory, pools) are strings in protobuf's JSON mapping.
    assert isinstance(info["capacity"]["memory"], str)
    assert int(info["capacity"]["memory"]) > 0
    assert all(isinstance(v, str) for v in info["pools"].values())


async def test_every_answer_and_error_carries_a_request_id(site):
    s = await site()
    ids = [
        (await s.post("/v1/ask", json=SEED)).headers["x-request-id"],
        (await s.post("/v1/ask", json={"tasktype": "docker"})).headers["x-request-id"],
        (await s.get("/v1/serviceinfo")).headers["x-request-id"],
        (await s.get("/v1/no-such-route")).headers["x-request-id"],
        (await s.get("/v1/ask")).headers["x-request-id"],
    ]
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 5


async def test_a_sane_client_request_id_is_echoed_and_an_odd_one_replaced(site):
    s = await site()
    sane = await s.post("/v1/ask", json=SEED, headers={"x-request-id": "trace-42.a/b"})
    assert sane.headers["x-request-id"] == "trace-42.a/b"
    refused = await s.post("/v1/ask", json={"tasktype": ""}, headers={"x-request-id": "e-1"})
    assert (refused.status, refused.headers["x-request-id"]) == (400, "e-1")
    odd = await s.post("/v1/ask", json=SEED, headers={"x-request-id": "has spaces; and more"})
    assert re.fullmatch("[0-9a-f]{32}", odd.headers["x-request-id"])


def _keys(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "serviceinfo":  # a plugin's own JSON, not the proto's
                yield key
                yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)
