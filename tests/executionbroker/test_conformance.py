"""Conformance with the ExecutionBroker draft's own schema and examples:
every example request parses and gets a well-formed answer, in YAML and in
JSON, that validates against the draft's OpenAPI schemas (``draft/``,
checked by ``jsonschema``); so does every session of it, read and updated.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from executionbroker import schema
from executionbroker.conftest import UPDATE, Broker, docker_request

from ep_server.http.openapi import openapi_document

EXAMPLES = schema.examples()


def test_every_reference_in_the_draft_s_schema_resolves() -> None:
    found = list(schema.references())
    assert len(found) > 50
    for _, ref in found:
        assert isinstance(schema.resolve(ref), dict), ref


def test_the_schema_refuses_what_it_should() -> None:
    """The validators are live: a wrong answer is caught."""
    assert schema.problems("OfferSetResponse", {"uuid": "not-a-uuid", "href": 1, "result": "MAYBE"})
    session = {"uuid": "6b0f2ad8-8d5b-4b87-9f93-1a1e3e0c5e7a", "href": "/s", "state": "DONE"}
    assert any("state" in p for p in schema.problems("ExecutionSessionResponse", session))
    interval = {"schedule": {"executing": {"start": "2031-03-04T09:00Z"}}}
    assert schema.problems("ExecutionSessionResponse", {**session, "state": "OFFERED", **interval})


def test_the_requests_written_from_the_draft_s_schema_validate_against_it() -> None:
    for name, text, _ in EXAMPLES:
        if name.startswith("openapi-"):
            assert schema.problems("OfferSetRequest", yaml.safe_load(text)) == [], name


def _valid_offerset(answer: Any) -> None:
    assert schema.problems("OfferSetResponse", answer) == []
    for session in answer["offers"]:
        assert schema.problems("ExecutionSessionResponse", session) == []


@pytest.mark.parametrize("form", ["yaml", "json"])
@pytest.mark.parametrize(("name", "text", "expect"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
async def test_every_example_request_gets_a_well_formed_answer(
    broker: Any, form: str, name: str, text: str, expect: str
) -> None:
    b: Broker = await broker()
    body: Any = text if form == "yaml" else yaml.safe_load(text)
    answer = await b.offerset(body, form=form)
    _valid_offerset(answer.data)
    assert answer.data["result"] == expect, answer.text
    if expect == "NO":
        assert answer.data["offers"] == []
        assert answer.data["messages"], "a NO says why"
        assert {m["level"] for m in answer.data["messages"]} >= {"ERROR"}
        return
    for session in answer.data["offers"]:
        read = await b.call("GET", f"/sessions/{session['uuid']}", form=form)
        assert read.status == 200
        assert read.data == session
        assert schema.problems("ExecutionSessionResponse", read.data) == []


@pytest.mark.parametrize("form", ["yaml", "json"])
async def test_every_state_a_session_goes_through_validates(broker: Any, form: str) -> None:
    b: Broker = await broker()
    later = docker_request(at="2031-03-04T10:00:00Z")
    first, second = (await b.offerset(later, form=form)).data["offers"][:2]
    seen = []
    for reply in (
        await b.update(first, "ACCEPTED", form=form),
        await b.call("GET", f"/sessions/{first['uuid']}", form=form),
        await b.call("GET", f"/sessions/{second['uuid']}", form=form),
        await b.update(first, "CANCELLED", form=form),
    ):
        assert reply.status == 200, reply.text
        assert schema.problems("ExecutionSessionResponse", reply.data) == []
        seen.append(reply.data["state"])
    assert seen == ["ACCEPTED", "WAITING", "REJECTED", "CANCELLED"]
    again = await b.call("GET", f"/offersets/{first['offerset']['uuid']}", form=form)
    _valid_offerset(again.data)


async def test_the_update_bodies_sent_are_the_draft_s_update_request() -> None:
    body = {"update": {"type": UPDATE, "path": "state", "value": "ACCEPTED"}}
    assert schema.problems("UpdateRequest", body) == []


def _door_problems(component: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the door's own OpenAPI description."""
    document = openapi_document()
    schema = {**document, "$ref": f"#/components/schemas/{component}"}
    found = jsonschema.Draft202012Validator(schema).iter_errors(instance)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found)


async def test_answers_match_the_door_s_own_openapi_description(broker: Any) -> None:
    b: Broker = await broker()
    for name, text, _ in EXAMPLES:
        assert _door_problems("EbRequest", yaml.safe_load(text)) == [], name
        answer = (await b.offerset(text)).data
        assert _door_problems("EbOfferSet", answer) == [], name
    fresh: Broker = await broker()  # alice holds as many offers as she may on b
    later = docker_request(at="2031-03-04T10:00:00Z")
    session = (await fresh.offerset(later)).data["offers"][0]
    accepted = (await fresh.update(session, "ACCEPTED")).data
    assert _door_problems("EbSession", accepted) == []
    update = {"update": {"type": UPDATE, "path": "state", "value": "CANCELLED"}}
    assert _door_problems("EbUpdate", update) == []
