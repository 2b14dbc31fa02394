"""Reading ExecutionBroker requests and updates, and the states and
messages of the documents written back, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ep_server.errors import InvalidArgument
from ep_server.http.broker import read_update
from ep_server.http.broker_documents import (
    message_item,
    public_id,
    session_state,
    stored_document,
    stored_id,
)
from ep_server.http.broker_request import (
    SIMPLE_COMPUTE,
    Note,
    format_duration,
    parse_duration,
    read_request,
)
from ep_server.model import Booking, BookingState, Slot
from ep_server.schedule.ledger import OfferFate

NOW = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
GIB = 2**30
DRAFT_DOCKER = "https://www.purl.org/ivoa.net/EB/schema/types/executables/docker-container-1.0.yaml"
CALYCOPIS_DOCKER = (
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0"
)
IMAGE = {"locations": ["ghcr.io/ivoa/example:1.0"]}


def test_the_draft_s_request_is_read_into_its_ask() -> None:
    request = read_request(
        {
            "name": "mine",
            "executable": {"type": DRAFT_DOCKER, "name": "c", "uuid": "u", "image": IMAGE},
            "resources": {
                "compute": [
                    {
                        "type": SIMPLE_COMPUTE,
                        "cores": {"requested": {"min": 2, "max": 4}},
                        "memory": {"requested": {"min": 1, "max": 512, "units": "MiB"}},
                    }
                ]
            },
            "schedule": {"requested": {"duration": "PT2H", "start": ["2031-03-04T10:00:00Z/PT4H"]}},
        },
        NOW,
    )
    assert request.ask == {
        "tasktype": "uri://docker-container",
        "taskinfo": {"image": IMAGE},
        "resources": {"cores": {"min": 2, "max": 4}, "memory": {"min": 2**20, "max": 512 * 2**20}},
        "schedule": {
            "windows": [{"start": "2031-03-04T10:00:00Z", "end": "2031-03-04T14:00:00Z"}],
            "min_duration": "7200s",
        },
    }
    assert request.notes == []
    assert request.echo["executable"]["type"] == DRAFT_DOCKER
    assert request.echo["name"] == "mine"


def test_calycopis_s_request_is_read_into_the_same_ask() -> None:
    draft = read_request(
        {
            "executable": {"type": DRAFT_DOCKER, "image": IMAGE},
            "resources": {"compute": [{"cores": {"min": 2}, "memory": {"min": 1}}]},
            "schedule": {"requested": {"duration": "PT1H", "start": ["2031-03-04T10:00:00Z"]}},
        },
        NOW,
    )
    calycopis = read_request(
        {
            "executable": {"kind": CALYCOPIS_DOCKER, "image": IMAGE, "meta": {"name": "x"}},
            "compute": {"kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/"
                        "simple-compute-resource-1.0", "cores": {"min": 2}, "memory": {"min": 1}},
            "schedule": {"requested": {"duration": "PT1H", "start": "2031-03-04T10:00:00Z"}},
        },
        NOW,
    )  # fmt: skip
    assert calycopis.ask == draft.ask
    assert calycopis.notes == draft.notes == []
    assert calycopis.echo["executable"]["type"] == CALYCOPIS_DOCKER  # written as the draft's key
    assert "kind" not in calycopis.echo["executable"]
    assert calycopis.compute_path == "compute"


def test_the_draft_text_s_request_with_its_spec_is_read() -> None:
    request = read_request(
        {
            "request": {
                "executable": {
                    "type": "https://www.purl.org/ivoa.net/executable-types/jupyter-notebook",
                    "spec": {"notebook": "https://example.org/nb.ipynb"},
                },
                "resources": {"compute": [{"spec": {"cores": {"min": 8}, "memory": {"min": 16}}}]},
            }
        },
        NOW,
    )
    assert request.ask["tasktype"] == "uri://jupyter-notebook"
    assert request.ask["taskinfo"] == {"notebook": "https://example.org/nb.ipynb"}
    assert request.ask["resources"] == {"cores": {"min": 8}, "memory": {"min": 16 * GIB}}
    assert request.request_path("taskinfo.notebook") == "executable.spec.notebook"
    assert request.request_path("resources.cores.min") == "resources.compute[0].cores.min"


def test_an_unknown_executable_type_is_asked_as_it_is() -> None:
    request = read_request({"executable": {"type": "https://example.org/my-type"}}, NOW)
    assert request.ask["tasktype"] == "https://example.org/my-type"
    assert not request.refused


def test_no_schedule_asks_for_an_hour_starting_within_a_day() -> None:
    ask = read_request({"executable": {"type": DRAFT_DOCKER}}, NOW).ask
    assert ask["schedule"] == {
        "windows": [{"start": "2031-03-04T09:00:00Z", "end": "2031-03-05T09:00:00Z"}],
        "min_duration": "3600s",
    }


@pytest.mark.parametrize(
    ("start", "window"),
    [
        ("2031-03-04T10:00:00Z/2031-03-04T11:30:00Z", ("10:00", "11:30")),
        ("2031-03-04T10:00Z/PT30M", ("10:00", "10:30")),
        ("2031-03-04T10:00Z/T12:00Z", ("10:00", "12:00")),
        ("2031-03-04T10:00:00+01:00", ("09:00", "09:00")),
        ("2031-03-04T10:00:00", ("10:00", "10:00")),
    ],
)
def test_start_intervals_of_every_form(start: str, window: tuple[str, str]) -> None:
    request = read_request({"executable": {"type": DRAFT_DOCKER},
                            "schedule": {"requested": {"start": [start]}}}, NOW)  # fmt: skip
    [got] = request.ask["schedule"]["windows"]
    assert (got["start"][11:16], got["end"][11:16]) == window
    [echo] = request.echo["schedule"]["requested"]["start"]
    assert echo.startswith(got["start"] + "/PT")  # the draft's start/duration form


def test_a_duration_range_of_the_draft_text_is_read() -> None:
    request = read_request(
        {"executable": {"type": DRAFT_DOCKER},
         "schedule": {"requested": {"duration": {"min": "P1H", "max": "PT4H"}}}},
        NOW,
    )  # fmt: skip
    assert request.ask["schedule"]["min_duration"] == "3600s"
    assert request.ask["schedule"]["max_duration"] == "14400s"
    assert request.echo["schedule"]["requested"]["duration"] == "PT1H"


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("PT2H", timedelta(hours=2)),
        ("P1DT2H3M4S", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("P1W", timedelta(weeks=1)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P1H", timedelta(hours=1)),
        ("PT0S", timedelta()),
    ],
)
def test_iso_durations(text: str, span: timedelta) -> None:
    assert parse_duration(text) == span


@pytest.mark.parametrize("text", ["P1M", "P1Y", "P", "PT", "2H", "PT2X", 7, "P1DT"])
def test_iso_durations_refused(text: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each message is its own)
        parse_duration(text)


def test_durations_are_written_in_the_draft_s_pattern() -> None:
    assert format_duration(timedelta(hours=2)) == "PT2H"
    assert format_duration(timedelta(hours=26, seconds=5)) == "PT26H5S"
    assert format_duration(timedelta()) == "PT0S"


def test_what_this_site_never_offers_is_a_reason_to_say_no() -> None:
    request = read_request(
        {
            "executable": {"type": DRAFT_DOCKER},
            "resources": {
                "compute": [{"type": "uri:quantum", "replicas": 2, "extras": [{"type": "gpu"}]},
                            {"cores": {"min": 1}}],
                "storage": [{"type": "uri:scratch"}],
                "data": [],
            },
            "colour": "blue",
        },
        NOW,
    )  # fmt: skip
    assert request.refused
    found = {(n.level, n.code, n.path) for n in request.notes}
    assert found == {
        ("WARN", "FIELD_IGNORED", "colour"),
        ("ERROR", "ONE_COMPUTE_RESOURCE", "resources.compute"),
        ("ERROR", "RESOURCE_NOT_OFFERED", "resources.compute[0].type"),
        ("ERROR", "RESOURCE_NOT_OFFERED", "resources.compute[0].replicas"),
        ("ERROR", "RESOURCE_NOT_OFFERED", "resources.compute[0].extras"),
        ("ERROR", "RESOURCE_NOT_OFFERED", "resources.storage"),
    }


def test_an_empty_request_is_refused() -> None:
    for empty in (None, {"request": None}):
        with pytest.raises(InvalidArgument, match="is empty"):
            read_request(empty, NOW)


def test_a_request_without_an_executable_is_a_no() -> None:
    request = read_request({"name": "nothing to run"}, NOW)
    assert [(n.code, n.path) for n in request.notes] == [("NO_EXECUTABLE", "executable")]
    request = read_request({"executable": {"image": IMAGE}}, NOW)
    assert [n.code for n in request.notes] == ["NO_EXECUTABLE_TYPE"]


def test_every_malformed_field_is_named_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_request(
            {
                "executable": {"type": DRAFT_DOCKER, "kind": "uri:other"},
                "resources": {
                    "compute": [{"cores": {"min": -1}, "memory": {"max": "lots"}}],
                    "storage": "scratch",
                },
                "schedule": {"requested": {"start": ["2031-03-04T10:00Z/2031-03-04T09:00Z"]}},
            },
            NOW,
        )
    assert [v.field for v in caught.value.violations] == [
        "executable.kind",
        "resources.storage",
        "resources.compute[0].cores.min",
        "resources.compute[0].memory.max",
        "schedule.requested.start[0]",
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"update": {"type": "uri:enum-value-update", "path": "state", "value": "ACCEPTED"}},
        {"update": {"kind": "uri:enum-value-update", "path": "/phase", "value": "ACCEPTED"}},
        {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"},
        {"type": "urn:enum-value-update", "path": "/state", "value": "ACCEPTED"},
    ],
)
def test_updates_of_the_draft_and_of_calycopis(body: Any) -> None:
    assert read_update(body) == "ACCEPTED"


@pytest.mark.parametrize("value", [{}, [], None, 3, "accepted"])
def test_an_update_of_another_value_is_refused(value: Any) -> None:
    with pytest.raises(InvalidArgument, match="must be ACCEPTED, REJECTED or CANCELLED"):
        read_update({"update": {"type": "uri:enum-value-update", "path": "state", "value": value}})


def test_an_update_naming_a_state_the_site_sets_says_so() -> None:
    with pytest.raises(InvalidArgument, match="a state the site sets"):
        read_update({"kind": "uri:enum-value-update", "path": "phase", "value": "AVAILABLE"})


def _booking(state: BookingState, start: float, end: float) -> Booking:
    slot = Slot(NOW + timedelta(hours=start), NOW + timedelta(hours=end))
    return Booking("b", "o", "alice", "p", "s", {}, slot, {}, state, NOW)


@pytest.mark.parametrize(
    ("fate", "accepted", "state"),
    [
        (OfferFate(held=True), False, "OFFERED"),
        (OfferFate(), False, "REJECTED"),
        (OfferFate(booking=_booking(BookingState.BOOKED, 1, 2)), True, "ACCEPTED"),
        (OfferFate(booking=_booking(BookingState.BOOKED, 1, 2)), False, "WAITING"),
        (OfferFate(booking=_booking(BookingState.BOOKED, -1, 2)), False, "READY"),
        (OfferFate(booking=_booking(BookingState.FINISHED, -2, -1)), False, "COMPLETED"),
        (OfferFate(booking=_booking(BookingState.CANCELLED, 1, 2)), True, "CANCELLED"),
    ],
)
def test_a_session_s_state_follows_its_offer_s_fate(
    fate: OfferFate, accepted: bool, state: str
) -> None:
    offer = {"expires": "2031-03-04T09:05:00Z"}
    assert session_state(offer, fate, NOW, accepted) == state


def test_a_session_gone_after_its_expiry_is_expired() -> None:
    offer = {"expires": "2031-03-04T09:05:00Z"}
    assert session_state(offer, OfferFate(), NOW + timedelta(minutes=5)) == "EXPIRED"


def test_a_message_s_template_escapes_braces() -> None:
    item = message_item(Note("ERROR", "X", "a.b", "needs {cores}"), NOW, "docker")
    assert item["template"] == "needs {{cores}}"
    assert item["message"] == "needs {cores}"
    assert item["values"] == {"code": "X", "path": "a.b", "plugin": "docker"}
    assert item["time"] == "2031-03-04T09:00:00Z"


def test_ids_are_written_as_uuids_and_read_in_any_spelling() -> None:
    hexed = "6b0f2ad88d5b4b879f931a1e3e0c5e7a"
    assert public_id(hexed) == "6b0f2ad8-8d5b-4b87-9f93-1a1e3e0c5e7a"
    assert stored_id(public_id(hexed)) == stored_id(hexed.upper()) == hexed
    assert public_id("not-a-uuid") == stored_id("not-a-uuid") == "not-a-uuid"


def test_reasons_are_errors_in_a_no_and_warnings_beside_offers() -> None:
    request = read_request({"executable": {"type": DRAFT_DOCKER, "image": IMAGE}}, NOW)
    reason = {"code": "NOPE", "field": "taskinfo.image", "message": "no", "plugin": "other"}
    offer = {"id": "ab" * 16, "expire_time": "2031-03-04T09:05:00Z", "servicetype": "uri://s",
             "slot": {"start": "2031-03-04T09:00:00Z", "end": "2031-03-04T10:00:00Z"}}  # fmt: skip
    no = stored_document(request, {"reasons": [reason]}, NOW)
    yes = stored_document(request, {"offers": [offer], "reasons": [reason]}, NOW)
    assert (no["result"], [m["level"] for m in no["messages"]]) == ("NO", ["ERROR"])
    assert (yes["result"], [m["level"] for m in yes["messages"]]) == ("YES", ["WARN"])
    assert yes["messages"][0]["values"] == {"code": "NOPE", "path": "executable.image",
                                            "plugin": "other"}  # fmt: skip
    assert [o["id"] for o in yes["offers"]] == ["ab" * 16]


def test_calycopis_s_top_level_resources_are_named_by_their_own_paths() -> None:
    request = read_request(
        {"executable": {"type": DRAFT_DOCKER}, "storage": [{"kind": "uri:s"}], "volumes": []},
        NOW,
    )
    assert [(n.code, n.path) for n in request.notes] == [("RESOURCE_NOT_OFFERED", "storage")]


def test_a_resource_given_in_both_places_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_request(
            {"executable": {"type": DRAFT_DOCKER}, "resources": {"compute": [{}]}, "compute": 5},
            NOW,
        )
    assert [v.field for v in caught.value.violations] == ["compute", "compute"]
