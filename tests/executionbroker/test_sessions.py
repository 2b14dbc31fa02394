"""The life of a session over the ExecutionBroker routes, in YAML and in
JSON: offered, accepted (waiting, ready, completed) or rejected, cancelled,
expired; whose it is; and the forms of the update, the answer and the
redirect."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from executionbroker.conftest import UPDATE, Broker, docker_request
from schedule.rpc_site import T0

FORMS = pytest.mark.parametrize("form", ["yaml", "json"])
LATER = "2031-03-04T10:00:00Z"  # an hour after the clock's start


async def state(b: Broker, session: dict[str, Any], **kwargs: Any) -> str:
    read = await b.call("GET", f"/sessions/{session['uuid']}", **kwargs)
    assert read.status == 200, read.text
    return str(read.data["state"])


@FORMS
async def test_offer_read_accept_read_cancel(broker: Any, form: str) -> None:
    b: Broker = await broker()
    offerset = (await b.offerset(docker_request(at=LATER), form=form)).data
    assert offerset["result"] == "YES"
    first, *others = offerset["offers"]
    assert len(others) == 2
    read = await b.call("GET", f"/sessions/{first['uuid']}", form=form)
    assert read.data["state"] == "OFFERED"
    assert read.data["options"] == [
        {"type": "uri:enum-value-option", "path": "state", "values": ["ACCEPTED", "REJECTED"]}
    ]
    assert read.data["offerset"]["uuid"] == offerset["uuid"]

    accepted = await b.update(first, "ACCEPTED", form=form)
    assert accepted.status == 200, accepted.text
    assert accepted.data["state"] == "ACCEPTED"
    assert accepted.data["options"][0]["values"] == ["CANCELLED"]
    assert await state(b, first, form=form) == "WAITING"
    for other in others:  # released when one was accepted: the draft's REJECTED
        assert await state(b, other, form=form) == "REJECTED"

    cancelled = await b.update(first, "CANCELLED", form=form)
    assert cancelled.data["state"] == "CANCELLED"
    assert "options" not in cancelled.data
    assert await state(b, first, form=form) == "CANCELLED"
    again = await b.call("GET", f"/offersets/{offerset['uuid']}", form=form)
    assert [s["state"] for s in again.data["offers"]] == ["CANCELLED", "REJECTED", "REJECTED"]


@FORMS
async def test_a_booked_session_is_ready_in_its_slot_and_completed_after(
    broker: Any, form: str
) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request(at=LATER), form=form)).data["offers"][0]
    await b.update(first, "ACCEPTED", form=form)
    b.clock.now = T0 + timedelta(hours=1, minutes=30)
    assert await state(b, first, form=form) == "READY"
    b.clock.now = T0 + timedelta(hours=3)
    assert await state(b, first, form=form) == "COMPLETED"
    late = await b.update(first, "CANCELLED", form=form)
    assert late.data["state"] == "COMPLETED"  # a finished booking stays finished


@FORMS
async def test_offer_reject(broker: Any, form: str) -> None:
    b: Broker = await broker()
    first, second, _ = (await b.offerset(docker_request(), form=form)).data["offers"]
    rejected = await b.update(first, "REJECTED", form=form)
    assert rejected.status == 200
    assert rejected.data["state"] == "REJECTED"
    assert "options" not in rejected.data
    assert await state(b, first, form=form) == "REJECTED"
    assert await state(b, second, form=form) == "OFFERED"
    assert (await b.update(first, "REJECTED", form=form)).data["state"] == "REJECTED"
    refused = await b.update(first, "ACCEPTED", form=form)
    assert (refused.status, _reason(refused)) == (400, "SESSION_REJECTED")


@FORMS
async def test_accepting_after_expiry_is_refused_and_the_session_reads_expired(
    broker: Any, form: str
) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request(), form=form)).data["offers"][0]
    b.clock.now = T0 + timedelta(minutes=5)  # offers hold for offer_ttl, 300 s
    refused = await b.update(first, "ACCEPTED", form=form)
    assert refused.status == 400
    assert refused.headers["Content-Type"].startswith("application/json")
    assert refused.data["code"] == 9  # FAILED_PRECONDITION
    assert _reason(refused) == "OFFER_EXPIRED"
    assert await state(b, first, form=form) == "EXPIRED"


async def test_accepting_twice_returns_the_same_booking(broker: Any) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request(at=LATER))).data["offers"][0]
    assert (await b.update(first, "ACCEPTED")).data["state"] == "ACCEPTED"
    assert (await b.update(first, "ACCEPTED")).data["state"] == "ACCEPTED"
    [booking] = (await b.call("GET", "/v1/bookings", form="json")).data["bookings"]
    assert booking["offer_id"] == first["uuid"].replace("-", "")


async def test_rejecting_a_booked_session_and_cancelling_an_offered_one_are_refused(
    broker: Any,
) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request(at=LATER))).data["offers"][0]
    await b.update(first, "ACCEPTED")
    assert _reason(await b.update(first, "REJECTED")) == "SESSION_ACCEPTED"
    other = (await b.offerset(docker_request(at=LATER))).data["offers"][0]
    refused = await b.update(other, "CANCELLED")
    assert (refused.status, _reason(refused)) == (400, "SESSION_NOT_ACCEPTED")
    assert await state(b, other) == "OFFERED"


async def test_calycopis_s_update_form_and_phase_path_are_read(broker: Any) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request(at=LATER), form="json")).data["offers"][0]
    body = {"kind": UPDATE, "path": "/phase", "value": "ACCEPTED"}
    accepted = await b.call("POST", f"/sessions/{first['uuid']}", body, form="json")
    assert accepted.status == 200, accepted.text
    assert accepted.data["state"] == "ACCEPTED"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"update": {"type": "uri:string-value-update", "path": "state", "value": "X"}},
         "update.type"),
        ({"update": {"type": UPDATE, "path": "name", "value": "ACCEPTED"}}, "update.path"),
        ({"update": {"type": UPDATE, "path": "state", "value": "RUNNING"}}, "update.value"),
        ({"kind": UPDATE, "path": "phase", "value": "AVAILABLE"}, "value"),
        (["not", "an", "update"], ""),
    ],
)  # fmt: skip
async def test_an_update_that_is_not_a_state_change_is_refused(
    broker: Any, body: Any, field: str
) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request())).data["offers"][0]
    refused = await b.call("POST", f"/sessions/{first['uuid']}", body, form="json")
    assert refused.status == 400
    assert refused.headers["x-request-id"]  # refused inside the call pipeline
    violations = refused.data["details"][0]["field_violations"]
    assert field in [v.get("field", "") for v in violations]
    assert await state(b, first) == "OFFERED"


# --- whose it is ---------------------------------------------------------------------


async def test_another_caller_s_offer_set_and_sessions_are_not_found(broker: Any) -> None:
    b: Broker = await broker()
    offerset = (await b.offerset(docker_request())).data
    first = offerset["offers"][0]
    for method, path, body in (
        ("GET", f"/offersets/{offerset['uuid']}", None),
        ("GET", f"/sessions/{first['uuid']}", None),
        ("POST", f"/sessions/{first['uuid']}",
         {"update": {"type": UPDATE, "path": "state", "value": "ACCEPTED"}}),
    ):  # fmt: skip
        seen = await b.call(method, path, body, user="bob", form="json")
        assert seen.status == 404, (method, path, seen.text)
        assert seen.data["code"] == 5
    assert await state(b, first) == "OFFERED"  # bob's accept changed nothing


async def test_without_credentials_nothing_is_made_or_read(broker: Any) -> None:
    b: Broker = await broker()
    first = (await b.offerset(docker_request())).data["offers"][0]
    made = await b.call("POST", "/offersets", docker_request(), user=None)
    assert made.status == 401
    garbled = await b.call("POST", f"/sessions/{first['uuid']}", "[1, 2", user=None)
    assert garbled.status == 401  # credentials first, as on every route
    assert made.headers["WWW-Authenticate"].startswith("Bearer")
    for path in (f"/sessions/{first['uuid']}", f"/offersets/{first['offerset']['uuid']}"):
        assert (await b.call("GET", path, user=None)).status == 401


async def test_unknown_ids_are_not_found(broker: Any) -> None:
    b: Broker = await broker()
    for path, reason in (
        ("/offersets/00000000-0000-0000-0000-000000000000", "OFFERSET_NOT_FOUND"),
        ("/sessions/nonsense", "SESSION_NOT_FOUND"),
    ):
        missing = await b.call("GET", path, form="json")
        assert (missing.status, _reason(missing)) == (404, reason)
        assert path.rsplit("/", 1)[1] in missing.data["message"]


# --- forms ---------------------------------------------------------------------------


async def test_asking_not_to_be_redirected_gets_200_with_the_offer_set(broker: Any) -> None:
    b: Broker = await broker()
    prefer = {"Prefer": "return=representation"}
    answer = await b.call("POST", "/offersets", docker_request(), headers=prefer)
    assert answer.status == 200
    assert answer.headers["Location"] == f"/offersets/{answer.data['uuid']}"
    assert answer.data["result"] == "YES"


async def test_calycopis_s_route_and_the_draft_text_s_route_make_offer_sets(broker: Any) -> None:
    b: Broker = await broker()
    for path in ("/requests", "/request"):
        answer = await b.call("POST", path, docker_request())
        assert answer.status == 303
        assert answer.headers["Location"].startswith("/offersets/")


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("", "application/yaml"),
        ("*/*", "application/yaml"),
        ("application/json", "application/json"),
        ("application/json, application/yaml", "application/yaml"),
        ("application/yaml", "application/yaml"),
    ],
)
async def test_answers_are_yaml_unless_json_alone_is_asked_for(
    broker: Any, accept: str, kind: str
) -> None:
    b: Broker = await broker()
    answer = await b.call("POST", "/offersets", docker_request(), form="json", accept=accept)
    assert answer.headers["Content-Type"].split(";")[0] == kind
    assert answer.data["result"] == "YES"


async def test_a_request_of_no_stated_type_is_read_as_yaml(broker: Any) -> None:
    b: Broker = await broker()
    text = "executable:\n  type: https://www.purl.org/ivoa.net/executable-types/docker-container\n"
    text += "  image: docker.io/example:1.0\n"
    answer = await b.call("POST", "/offersets", text, headers={"Content-Type": ""})
    assert answer.status == 303, answer.text
    assert answer.data["result"] == "YES"


async def test_a_request_of_another_type_is_refused(broker: Any) -> None:
    b: Broker = await broker()
    answer = await b.call("POST", "/offersets", "x=1", headers={"Content-Type": "text/plain"})
    assert answer.status == 415


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"executable": "docker"}, "executable"),
        ({"executable": {"type": 7}}, "executable.type"),
        ({"executable": {"type": "uri:x"}, "resources": {"compute": [{"cores": {"min": 1.5}}]}},
         "resources.compute[0].cores.min"),
        ({"executable": {"type": "uri:x"}, "compute": {"memory": {"min": 1, "units": "XB"}}},
         "compute.memory.units"),
        ({"executable": {"type": "uri:x"}, "schedule": {"requested": {"duration": "P1M"}}},
         "schedule.requested.duration"),
        ({"executable": {"type": "uri:x"}, "schedule": {"requested": {"start": ["yesterday"]}}},
         "schedule.requested.start[0]"),
        ({"executable": {"type": "not a uri"}}, "executable.type"),
        ({"executable": {"type": "uri:x"}, "name": ["a", "list"]}, "name"),
    ],
)  # fmt: skip
async def test_a_malformed_request_is_refused_naming_its_field(
    broker: Any, body: Any, field: str
) -> None:
    b: Broker = await broker()
    answer = await b.call("POST", "/offersets", body, form="json")
    assert answer.status == 400, answer.text
    violations = answer.data["details"][0]["field_violations"]
    assert field in [v["field"] for v in violations]


async def test_a_yaml_request_with_aliases_is_refused(broker: Any) -> None:
    b: Broker = await broker()
    text = "executable: &e {type: uri:x}\nname: *e\n"
    answer = await b.call("POST", "/offersets", text)
    assert answer.status == 400
    assert "aliases" in answer.data["message"]


async def test_a_no_lists_every_reason_with_its_path(broker: Any) -> None:
    b: Broker = await broker()
    request = docker_request(cores=64)
    request["resources"]["storage"] = [{"type": "uri:scratch", "size": 10}]
    answer = (await b.offerset(request)).data
    assert answer["result"] == "NO"
    paths = {m["values"].get("path") for m in answer["messages"]}
    assert "resources.storage" in paths
    codes = {m["values"]["code"] for m in answer["messages"]}
    assert codes == {"RESOURCE_NOT_OFFERED"}  # not asked: a NO already


async def test_a_plugin_s_reason_names_the_request_s_field(broker: Any) -> None:
    b: Broker = await broker()
    answer = (await b.offerset(docker_request(cores=64))).data
    assert answer["result"] == "NO"
    [message] = [m for m in answer["messages"] if m["values"]["code"] == "INSUFFICIENT_CORES"]
    assert message["level"] == "ERROR"
    assert message["values"]["path"] == "resources.compute[0].cores.min"
    assert message["values"]["plugin"] == "docker"
    assert message["message"]


async def test_a_site_without_bookings_says_so(broker: Any) -> None:
    b: Broker = await broker(enabled=False)
    answer = await b.call("POST", "/offersets", docker_request(), form="json")
    assert answer.status == 400
    assert _reason(answer) == "SCHEDULING_UNSUPPORTED"


def _reason(reply: Any) -> str:
    for detail in reply.data.get("details", ()):
        if detail.get("@type", "").endswith("ErrorInfo"):
            return str(detail["reason"])
    return ""


async def test_a_body_past_the_limit_is_refused(broker: Any) -> None:
    b: Broker = await broker()
    huge = "name: " + "x" * (4 * 1024 * 1024 + 10) + "\n"
    for path in ("/offersets", "/sessions/6b0f2ad8-8d5b-4b87-9f93-1a1e3e0c5e7a"):
        refused = await b.call("POST", path, huge)
        assert refused.status == 413, path
