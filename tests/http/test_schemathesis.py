"""The HTTP door keeps to its OpenAPI document: schemathesis sends requests
generated from it (valid ones and deliberately invalid ones) to a real
server, anonymously and with a token, and checks every answer: never a 5xx,
every status, header and body as the document says, invalid requests
refused, and no request left hanging (each has REQUEST_TIMEOUT seconds).

The server runs on an event loop in a thread of its own, since
schemathesis calls it synchronously. It takes bookings and has a plugin
that says YES, so that offers, slots and bookings are answered too, not
only refusals. The schemas are loaded at import and the server's address
given to each call, because schemathesis's fixture-loaded schemas
(``schemathesis.pytest.from_fixture``) do not run under pytest 9.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schedule.rpc_site import DOCKER, TOKENS, Booker, tokens_file
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ep_server.http.openapi import openapi_document, openapi_json
from ep_server.server import Running, start_server
from ep_server.testing import build_registry, build_settings

#: Seconds any one request may take before the test fails as a hang.
REQUEST_TIMEOUT = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
BEARER = {"Authorization": f"Bearer {TOKENS['alice']}"}


class _Site:
    """An EP that takes bookings, with alice's token, on an event loop in a
    thread of its own."""

    def __init__(self, folder: Path) -> None:
        config = {
            "auth": {"tokens_file": str(tokens_file(folder))},
            "schedule": {"pools": {"cores": 8, "memory": "16GiB"}},
        }
        settings = build_settings(config)
        registry = build_registry(settings, {"booker": Booker()}, entry_points=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: Running = self._run(start_server(settings, registry))
        assert self.running.http is not None
        self.http = self.running.http
        self.url = f"http://127.0.0.1:{self.http.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        try:
            self._run(self.running.shutdown(0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Site]:
    """The site the generated requests go to, one for the whole module."""
    started = _Site(tmp_path_factory.mktemp("site"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def base_url(site: _Site) -> str:
    return site.url


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    """A site of the test's own: no offers held by generated requests."""
    started = _Site(tmp_path)
    yield started.url
    started.close()


def _schema(auth: dict[str, Any] | None = None, *, coverage: bool = True) -> Any:
    """The document, with what schemathesis is to generate: valid requests
    and invalid ones, no stateful sequences; ``auth`` names the credentials
    it sends; ``coverage``, whether to send its fixed set of boundary
    cases too (most of the run's time). The server's address is given per
    call."""
    config: dict[str, Any] = {
        "request-timeout": REQUEST_TIMEOUT,
        "generation": {"mode": "all"},
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": coverage}},
    }
    if auth is not None:
        config["auth"] = auth
    schema = schemathesis.openapi.from_dict(
        openapi_document(), config=SchemathesisConfig.from_dict(config)
    )
    schema.hook("before_generate_body")(_claimed_task_type_too(_in_body))
    schema.hook("before_generate_query")(_claimed_task_type_too(_in_query))
    return schema


def _claimed_task_type_too(claim: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """A hook that has half the questions name the task type the site's
    plugin claims, so that YES answers (offers, slots, the note's shape) are
    checked too: a made-up task type only ever gets 400 or NO."""

    def hook(context: Any, strategy: Any) -> Any:
        return st.one_of(strategy, strategy.map(claim))

    return hook


def _in_body(body: Any) -> Any:
    # No body field is required: an invalid body stays invalid whatever its
    # tasktype, unless the tasktype is what is wrong with it (not a string).
    if isinstance(body, dict) and isinstance(body.get("tasktype", ""), str | None):
        return {**body, "tasktype": DOCKER}
    return body


def _in_query(query: Any) -> Any:
    # /accepts requires its tasktype: a query left without one stays so.
    if isinstance(query, dict) and isinstance(query.get("tasktype"), str):
        return {**query, "tasktype": DOCKER}
    return query


# The boundary cases go to alice's run, which reaches every route.
anonymous = _schema(coverage=False)
alice = _schema({"openapi": {"bearer": {"bearer": TOKENS["alice"]}}})

#: What every generated request is given: a bounded number of examples per
#: operation, each request under REQUEST_TIMEOUT rather than a test deadline.
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    database=None,  # keep .hypothesis/ out of the repository
    suppress_health_check=list(HealthCheck),
)


def _call(case: Any, base_url: str, **kwargs: Any) -> Any:
    with requests.Session() as session:
        return case.call_and_validate(
            base_url, session, checks=CHECKS, timeout=REQUEST_TIMEOUT, **kwargs
        )


@anonymous.parametrize()
@BOUNDED
def test_every_anonymous_answer_is_as_the_document_says(case: Any, base_url: str) -> None:
    _call(case, base_url)


@alice.parametrize()
@BOUNDED
def test_every_answer_to_a_known_caller_is_as_the_document_says(case: Any, base_url: str) -> None:
    _call(case, base_url)


# --- a booking's whole life, each answer checked -----------------------------------


def _ok(base_url: str, route: str, **parts: Any) -> Any:
    """Call an operation (``"GET /v1/bookings"``) as alice, with path
    parameters, ``query`` or ``body``; its answer must be 200 and as
    documented."""
    method, path = route.split()
    fields = {k: parts.pop(k) for k in ("query", "body") if k in parts}
    if "body" in fields:
        fields["media_type"] = "application/json"
    case = alice[path][method].Case(path_parameters=parts, **fields)
    response = _call(case, base_url, headers=BEARER)
    assert response.status_code == 200, response.text
    return response.json()


def _scheduled_ask() -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    window = {"start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat()}
    return {
        "tasktype": DOCKER,
        "taskinfo": {"cores": 2},
        "schedule": {"windows": [window], "min_duration": "3600s"},
    }


def test_a_booking_s_whole_life_is_as_the_document_says(fresh_url: str) -> None:
    base_url = fresh_url
    answer = _ok(base_url, "POST /v1/ask", body=_scheduled_ask())
    assert answer["responseword"] == "YES"
    first, second = (offer["id"] for offer in answer["offers"][:2])
    assert _ok(base_url, "POST /v1/offers/{offer_id}:reject", offer_id=second) == {}
    accepted = _ok(base_url, "POST /v1/offers/{offer_id}:accept", offer_id=first)
    booking = accepted["booking"]
    assert booking["state"] == "BOOKING_STATE_BOOKED"
    assert _ok(base_url, "GET /v1/bookings/{booking_id}", booking_id=booking["id"]) == accepted
    page = _ok(base_url, "GET /v1/bookings", query={"page_size": 1})
    assert [b["id"] for b in page["bookings"]] == [booking["id"]]
    cancelled = _ok(base_url, "POST /v1/bookings/{booking_id}:cancel", booking_id=booking["id"])
    assert cancelled["booking"]["state"] == "BOOKING_STATE_CANCELLED"
    assert _ok(base_url, "GET /v1/serviceinfo")["pools"]["cores"] == "8"


def test_the_note_s_answers_are_as_the_document_says(fresh_url: str) -> None:
    base_url = fresh_url
    scheduled = _ok(base_url, "POST /accept", body=_scheduled_ask())
    assert scheduled["reponseword"] == "YES"
    assert scheduled["interfaces"]
    query = {"tasktype": DOCKER, "taskinfo": '{"cores": 1}'}
    assert _ok(base_url, "GET /accepts", query=query)["servicetype"] == "uri://docker-uws"
    refused = _ok(base_url, "GET /accepts", query={"tasktype": "uri://unclaimed"})
    assert refused["responseword"] == "NO"
    assert refused["reasons"]


def test_the_door_serves_the_committed_document(base_url: str) -> None:
    response = requests.get(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.content == openapi_json()


def _routes(paths: Any) -> set[tuple[str, str]]:
    """(METHOD, path) with every path variable written ``{}``."""
    return {(method.upper(), re.sub(r"\{[^}]*\}", "{}", path)) for method, path in paths}


def test_the_document_has_every_route_the_door_serves_and_no_other(site: _Site) -> None:
    served = [
        (route.method, route.resource.canonical)
        for route in site.http.runner.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    ]
    paths = openapi_document()["paths"]
    documented = [(verb, path) for path, item in paths.items() for verb in item]
    assert _routes(served) == _routes(documented)
