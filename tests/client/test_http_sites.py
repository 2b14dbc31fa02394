"""Sites that speak the IVOA note's HTTP interface, asked by the asyncio client.

Against a real EP's HTTP door (the same question over gRPC and over HTTP gets
the same offers) and against small aiohttp servers standing in for other
note servers: either spelling of the verdict, interfaces, reasons, answers
that are not answers, error statuses, retries, hangs, oversize bodies,
redirects and TLS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web

from ep_server.client import (
    TLS,
    Answer,
    Client,
    Failure,
    FailureKind,
    IntRange,
    Offer,
    Resources,
    RetryPolicy,
    Site,
    TaskQuery,
    choose,
    parse_sites,
)
from ep_server.client.convert import answer_from_proto
from ep_server.client.http_reply import MAX_ANSWER_BYTES
from ep_server.client.http_sites import redirect_target
from ep_server.client.note import VERDICT_KEYS, response_json
from ep_server.http.note import RESPONSE_WORD_KEYS, note_answer
from ep_server.model import Cause
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.server import Running, start_server
from ep_server.testing import build_registry, build_settings
from ep_server.wire import http_json

DOCKER = "uri://docker-container"
UWS = "uri://docker-uws"
ROSETTA = "uri://rosetta-rest-api"
SEED = TaskQuery(DOCKER, {"image": "docker.io/example:1.0"})
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- a real EP, asked over gRPC and over its HTTP door ---------------------


@pytest.fixture
async def real_ep() -> AsyncIterator[Running]:
    """The seed's EP (plugins static and docker) on loopback, both doors open."""
    settings = build_settings({"plugins": {"allow": ["static", "docker"]}})
    running = await start_server(settings, build_registry(settings))
    yield running
    await running.shutdown(0)


def _mixed_sites(running: Running) -> list[Site]:
    return parse_sites(
        {
            "site": [
                {"name": "grpc", "address": f"127.0.0.1:{running.port}"},
                {"name": "http", "url": f"http://127.0.0.1:{running.http_port}"},
            ]
        }
    )


async def test_a_mixed_site_list_gets_the_same_offers_over_grpc_and_http(
    real_ep: Running,
) -> None:
    sites = _mixed_sites(real_ep)
    assert [site.over_http for site in sites] == [False, True]
    async with Client() as client:
        results = {r.site.name: r for r in await client.ask_all(sites, SEED, deadline=5)}
    over_grpc, over_http = results["grpc"].answer, results["http"].answer
    assert over_grpc is not None, results["grpc"].failure
    assert over_http is not None, results["http"].failure
    assert over_http.yes
    assert over_http.offers == over_grpc.offers
    assert over_http.offers[0].servicetype == UWS
    assert over_http.offers[0].resources is not None
    assert isinstance(over_http.raw, pb.AskResponse)
    best = choose(results.values(), [UWS])
    assert best is not None
    assert best.offer == over_grpc.offers[0]


async def test_resources_asked_for_are_sent_and_a_no_has_its_reasons(real_ep: Running) -> None:
    [_, site] = _mixed_sites(real_ep)
    query = TaskQuery(SEED.tasktype, SEED.taskinfo, Resources(cores=IntRange(100_000)))
    async with Client() as client:
        result = await client.ask(site, query, deadline=5)
    assert result.answer is not None, result.failure
    assert result.answer.word == "NO"
    [reason] = result.answer.reasons
    assert (reason.code, reason.cause, reason.field) == (
        "INSUFFICIENT_CORES",
        Cause.CAPACITY,
        "resources.cores.min",
    )
    assert reason.plugin == "docker"


async def test_the_real_servers_error_status_is_refused_with_its_code(real_ep: Running) -> None:
    [_, site] = _mixed_sites(real_ep)
    async with Client(retry=FAST_RETRY) as client:
        result = await client.ask(site, TaskQuery("not a uri"), deadline=5)
    failure = result.failure
    assert failure is not None
    assert failure.kind is FailureKind.REFUSED
    assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failure.message.startswith("HTTP 400: invalid AskRequest: tasktype")
    assert failure.attempts == 1


async def test_a_note_site_is_only_asked(real_ep: Running) -> None:
    [_, site] = _mixed_sites(real_ep)
    async with Client() as client:
        info = await client.service_info(site, deadline=5)
    assert isinstance(info, Failure)
    assert info.kind is FailureKind.CLIENT_ERROR
    assert "answers an ask only" in info.message
    assert info.attempts == 0


# --- the verdict's keys are the server's ------------------------------------


def test_the_client_reads_the_keys_the_server_writes() -> None:
    assert VERDICT_KEYS == RESPONSE_WORD_KEYS


def test_the_servers_note_answer_reads_back_as_the_answer_it_came_from() -> None:
    response = pb.AskResponse(responseword=pb.YES)
    for servicetype, cores in ((UWS, 4), (ROSETTA, 8)):
        offer = response.offers.add(servicetype=servicetype, plugin="p", message="m")
        offer.serviceinfo.update({"endpoint": f"http://example.org/{cores}"})
        offer.resources.cores.max = cores
        offer.resources.memory.min = 2**40
    timed = response.offers[1]
    timed.id = "offer-1"
    timed.expire_time.FromSeconds(1_900_000_000)
    timed.slot.start.FromSeconds(1_900_003_600)
    timed.slot.end.FromSeconds(1_900_010_800)
    timed.hold["cores"] = 8
    reason = response.reasons.add(code="NOTE", cause=pb.REASON_CAUSE_POLICY, retryable=True)
    reason.earliest_slot.start.FromSeconds(1_900_003_600)
    reason.earliest_slot.end.FromSeconds(1_900_010_800)
    note = json.loads(json.dumps(note_answer(http_json.message_dict(response))))
    assert _answer_of(note) == answer_from_proto(response)


def _answer_of(note: Any) -> Answer:
    from ep_server.client.convert import answer_from_json

    return answer_from_json(response_json(note))


# --- other note servers: small aiohttp servers -------------------------------


@dataclass
class Seen:
    """A request a stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Stub:
    """A running stub: its base URL and the requests it saw."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    @property
    def site(self) -> Site:
        return Site("stub", self.url)


StartStub = Callable[..., Awaitable[Stub]]


@pytest.fixture
async def stub() -> AsyncIterator[StartStub]:
    """``await stub(handler, ssl_context=None)``: a note server on loopback
    whose every request ``handler`` answers."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Stub:
        running = Stub()

        async def record(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            running.seen.append(Seen(request.method, request.path, dict(request.headers), body))
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        running.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/"
        return running

    yield start
    for runner in runners:
        await runner.cleanup()


def answering(*bodies: Any, status: int = 200) -> Handler:
    """A handler answering each body in turn (JSON unless bytes), then the last again."""
    queue = list(bodies)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(body, web.StreamResponse):
            return body
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return web.Response(status=status, body=data, content_type="application/json")

    return handle


async def ask(site: Site, query: TaskQuery = SEED, **client: Any) -> Answer | Failure:
    async with Client(**{"retry": FAST_RETRY, **client}) as c:
        return (await c.ask(site, query, deadline=5)).outcome


SERVICEINFO = {"endpoint": "http://example.org/dkuws"}
OFFER = {"servicetype": UWS, "serviceinfo": SERVICEINFO}


@pytest.mark.parametrize(
    "words",
    [
        {"reponseword": "YES"},
        {"responseword": "YES"},
        {"responseword": "YES", "reponseword": "YES"},
    ],
    ids=["reponseword", "responseword", "both"],
)
async def test_either_spelling_of_the_verdict_is_read(
    stub: StartStub, words: dict[str, str]
) -> None:
    running = await stub(answering({**words, **OFFER}))
    outcome = await ask(running.site)
    assert outcome == Answer("YES", (Offer(UWS, SERVICEINFO),))
    [seen] = running.seen
    assert (seen.method, seen.path) == ("POST", "/accept")
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {"tasktype": DOCKER, "taskinfo": dict(SEED.taskinfo)}


async def test_interfaces_follow_the_first_offer_in_order(stub: StartStub) -> None:
    answer = {
        "reponseword": "YES",
        **OFFER,
        "resources": {"cores": {"min": "1", "max": "4"}, "memory": {"max": 8589934592}},
        "plugin": "uws",
        "interfaces": [
            {"servicetype": ROSETTA, "serviceinfo": {"endpoint": "https://r"}, "extra": 1},
            {"servicetype": "uri://jupyter-notebook", "message": "a notebook"},
        ],
        "something_new": True,
    }
    running = await stub(answering(answer))
    outcome = await ask(running.site)
    assert isinstance(outcome, Answer)
    assert [o.servicetype for o in outcome.offers] == [UWS, ROSETTA, "uri://jupyter-notebook"]
    first = outcome.offers[0]
    assert first.resources == Resources(IntRange(1, 4), IntRange(None, 8 * 2**30))
    assert first.plugin == "uws"
    assert outcome.offers[1].serviceinfo == {"endpoint": "https://r"}
    assert outcome.offers[1].resources is None
    assert outcome.offers[2].message == "a notebook"


async def test_a_no_gives_its_reasons_whatever_their_cause(stub: StartStub) -> None:
    reasons = [
        {"code": "POLICY", "cause": "REASON_CAUSE_POLICY", "message": "no", "retryable": True},
        {"code": "FULL", "cause": "CAPACITY", "field": "resources.cores.min", "plugin": "p"},
        {"code": "NEW", "cause": "REASON_CAUSE_FROM_THE_FUTURE"},
        {"code": "BARE"},
    ]
    running = await stub(answering({"reponseword": "NO", "reasons": reasons}))
    outcome = await ask(running.site)
    assert isinstance(outcome, Answer)
    assert outcome.word == "NO"
    assert outcome.offers == ()
    assert [(r.code, r.cause) for r in outcome.reasons] == [
        ("POLICY", Cause.POLICY),
        ("FULL", Cause.CAPACITY),
        ("NEW", None),
        ("BARE", None),
    ]
    assert outcome.reasons[0].retryable
    assert outcome.reasons[1].field == "resources.cores.min"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html><body>Welcome to nginx!</body></html>", "not JSON (application/json; "),
        (b"", "not JSON"),
        (b'{"reponseword": NaN}', "NaN is not a JSON number"),
        ([1, 2], "the answer is a JSON array, not an object"),
        ({"servicetype": UWS}, "no verdict (neither responseword nor reponseword)"),
        ({"reponseword": "MAYBE"}, "reponseword is 'MAYBE', not YES or NO"),
        ({"reponseword": True}, "reponseword is True, not YES or NO"),
        ({"responseword": "YES", "reponseword": "NO", **OFFER}, "disagree"),
        ({"reponseword": "YES"}, "a YES without a servicetype"),
        ({"reponseword": "YES", "servicetype": ""}, "a YES without a servicetype"),
        ({"reponseword": "YES", **OFFER, "interfaces": {}}, "interfaces is not a list"),
        ({"reponseword": "YES", **OFFER, "interfaces": [{}]}, "interfaces[0] has no servicetype"),
        ({"reponseword": "NO", "reasons": "none"}, "reasons is not a list of objects"),
        ({"reponseword": "YES", **OFFER, "resources": {"cores": {"max": "many"}}}, "max"),
        ({"reponseword": "YES", **OFFER, "serviceinfo": "http://x"}, "serviceinfo"),
    ],
)
async def test_an_answer_that_is_not_the_notes_is_an_unreadable_answer(
    stub: StartStub, body: Any, expected: str
) -> None:
    running = await stub(answering(body))
    outcome = await ask(running.site)
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.CLIENT_ERROR
    assert outcome.message.startswith("unreadable answer: ")
    assert expected in outcome.message
    assert outcome.attempts == 1


async def test_an_error_status_with_a_plain_body_is_refused_with_the_bodys_words(
    stub: StartStub,
) -> None:
    running = await stub(answering(b"<h1>Internal\n   Server Error</h1>", status=500))
    outcome = await ask(running.site)
    assert outcome == Failure(
        FailureKind.REFUSED,
        f"HTTP 500 from POST {running.url}accept: <h1>Internal Server Error</h1>",
        grpc.StatusCode.INTERNAL,
        attempts=1,
    )
    assert len(running.seen) == 1


async def test_an_error_status_with_a_google_rpc_status_body_gives_its_code(
    stub: StartStub,
) -> None:
    status = {"code": 7, "message": "not for you", "details": []}
    running = await stub(answering(status, status=403))
    outcome = await ask(running.site)
    assert outcome == Failure(
        FailureKind.REFUSED, "HTTP 403: not for you", grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_404_names_the_url_asked(stub: StartStub) -> None:
    running = await stub(answering(b"", status=404))
    outcome = await ask(Site("wrong", running.url + "not/the/ep/"))
    assert outcome == Failure(
        FailureKind.REFUSED,
        f"HTTP 404 from POST {running.url}not/the/ep/accept",
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_site_not_ready_is_retried_until_it_answers(stub: StartStub, status: int) -> None:
    not_ready = web.Response(status=status, text="starting")
    running = await stub(answering(not_ready, {"reponseword": "YES", **OFFER}))
    outcome = await ask(running.site)
    assert isinstance(outcome, Answer)
    assert outcome.yes
    assert len(running.seen) == 2


async def test_a_site_that_stays_unavailable_is_unreachable_after_the_retries(
    stub: StartStub,
) -> None:
    running = await stub(answering(b"busy", status=503))
    outcome = await ask(running.site)
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.UNREACHABLE
    assert outcome.code is grpc.StatusCode.UNAVAILABLE
    assert outcome.attempts == len(running.seen) == FAST_RETRY.max_attempts


async def test_a_refused_connection_is_retried_then_unreachable(refused_address: str) -> None:
    outcome = await ask(Site("down", f"http://{refused_address}/"))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.UNREACHABLE
    assert outcome.code is grpc.StatusCode.UNAVAILABLE
    assert outcome.attempts == FAST_RETRY.max_attempts


async def test_a_site_that_comes_up_late_is_reached_by_the_retries(
    refused_address: str,
) -> None:
    host, port = refused_address.rsplit(":", 1)

    async def come_up() -> web.AppRunner:
        await asyncio.sleep(0.2)
        app = web.Application()
        app.router.add_post("/accept", answering({"reponseword": "YES", **OFFER}))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, int(port)).start()
        return runner

    later = asyncio.create_task(come_up())
    try:
        outcome = await ask(Site("late", f"http://{refused_address}/"), retry=RetryPolicy())
    finally:
        await (await later).cleanup()
    assert isinstance(outcome, Answer)


async def test_a_site_that_hangs_ends_at_the_deadline(silent_address: str) -> None:
    deadline = 0.5
    start = time.monotonic()
    async with Client() as client:
        result = await client.ask(Site("silent", f"http://{silent_address}/"), SEED, deadline=0.5)
    elapsed = time.monotonic() - start
    assert result.failure == Failure(FailureKind.DEADLINE_EXCEEDED, "no answer before the deadline")
    assert deadline <= elapsed < deadline + 0.5


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversize_answer_is_not_read(stub: StartStub, chunked: bool) -> None:
    padding = "x" * MAX_ANSWER_BYTES
    big = json.dumps({"reponseword": "YES", **OFFER, "message": padding}).encode()

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(big)
        await response.prepare(request)
        for i in range(0, len(big), 1 << 20):
            await response.write(big[i : i + (1 << 20)])
        await response.write_eof()
        return response

    running = await stub(handle)
    outcome = await ask(running.site)
    message = f"unreadable answer: larger than {MAX_ANSWER_BYTES} bytes; not read"
    assert outcome == Failure(FailureKind.CLIENT_ERROR, message)


async def test_a_compressed_answer_is_not_read(stub: StartStub) -> None:
    gzipped = web.Response(body=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})
    running = await stub(answering(gzipped))
    outcome = await ask(running.site)
    assert isinstance(outcome, Failure)
    assert "Content-Encoding gzip, not asked for" in outcome.message
    assert running.seen[0].headers["Accept-Encoding"] == "identity"


async def test_metadata_goes_as_headers_but_not_over_the_requests_own(
    stub: StartStub,
) -> None:
    running = await stub(answering({"reponseword": "NO"}))
    metadata = [
        ("authorization", "Bearer t0ken"),
        ("x-trace-bin", b"\x00\x01"),
        ("content-type", "text/plain"),
    ]
    assert isinstance(await ask(running.site, metadata=metadata), Answer)
    headers = running.seen[0].headers
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["x-trace-bin"] == "AAE="
    assert headers["Content-Type"] == "application/json"


# --- redirects ---------------------------------------------------------------


def redirecting(location: str, status: int = 307) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/accept":
            return web.Response(status=status, headers={"Location": location})
        return await answering({"reponseword": "YES", **OFFER})(request)

    return handle


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_followed_with_the_question_posted_again(
    stub: StartStub, status: int
) -> None:
    running = await stub(redirecting("/v2/accept", status))
    outcome = await ask(running.site, metadata=[("authorization", "Bearer t")])
    assert isinstance(outcome, Answer)
    first, second = running.seen
    assert (second.method, second.path) == ("POST", "/v2/accept")
    assert second.body == first.body
    assert second.headers["Authorization"] == "Bearer t"


async def test_a_redirect_to_another_host_sends_no_credentials(stub: StartStub) -> None:
    target = await stub(answering({"reponseword": "YES", **OFFER}))
    other_host = target.url.replace("127.0.0.1", "localhost") + "accept"
    running = await stub(redirecting(other_host))
    outcome = await ask(running.site, metadata=[("authorization", "Bearer t")])
    assert isinstance(outcome, Answer)
    assert "Authorization" in running.seen[0].headers
    assert "Authorization" not in target.seen[0].headers


async def test_a_303_is_not_followed(stub: StartStub) -> None:
    running = await stub(redirecting("/elsewhere", 303))
    outcome = await ask(running.site)
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.REFUSED
    assert outcome.message.endswith("redirected to /elsewhere, not followed")
    assert len(running.seen) == 1


async def test_redirects_stop_after_a_few(stub: StartStub) -> None:
    count = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        return web.Response(status=302, headers={"Location": f"/hop{count}/accept"})

    running = await stub(handle)
    outcome = await ask(running.site)
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.REFUSED
    assert outcome.message == f"more than 3 redirects, the last to {running.url}hop4/accept"
    assert len(running.seen) == 4


# --- TLS -----------------------------------------------------------------


@pytest.fixture
def server_tls(certs: Any) -> ssl.SSLContext:
    """A server context presenting ``certs`` (ep.test) and asking for a
    client certificate signed by it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    context.load_verify_locations(certs.cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _https(running: Stub, **tls: Any) -> Site:
    return Site("tls", running.url, TLS(server_name="ep.test", **tls))


async def test_https_with_the_sites_ca_and_client_certificate(
    stub: StartStub, server_tls: ssl.SSLContext, certs: Any
) -> None:
    running = await stub(answering({"reponseword": "YES", **OFFER}), server_tls)
    site = _https(running, ca=certs.cert, cert=certs.cert, key=certs.key)
    assert isinstance(await ask(site), Answer)


async def test_https_without_the_sites_ca_is_a_tls_failure(
    stub: StartStub, server_tls: ssl.SSLContext
) -> None:
    running = await stub(answering({"reponseword": "YES"}), server_tls)
    outcome = await ask(Site("tls", running.url))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.TLS
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message
    assert outcome.attempts == 1


async def test_https_without_a_client_certificate_says_one_may_be_needed(
    stub: StartStub, server_tls: ssl.SSLContext, certs: Any
) -> None:
    running = await stub(answering({"reponseword": "YES"}), server_tls)
    outcome = await ask(_https(running, ca=certs.cert))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.TLS
    assert "it may require a client certificate" in outcome.message


async def test_an_unreadable_ca_file_is_a_tls_failure_before_any_call(
    stub: StartStub, server_tls: ssl.SSLContext, tmp_path: Any
) -> None:
    running = await stub(answering({"reponseword": "YES"}), server_tls)
    outcome = await ask(_https(running, ca=tmp_path / "missing.pem"))
    assert outcome == Failure(
        FailureKind.TLS,
        f"cannot read TLS CA file {tmp_path / 'missing.pem'}: No such file or directory",
        attempts=0,
    )
    assert running.seen == []


async def test_a_redirect_from_https_down_to_http_is_not_followed(
    stub: StartStub, server_tls: ssl.SSLContext, certs: Any
) -> None:
    plain = await stub(answering({"reponseword": "YES", **OFFER}))
    running = await stub(redirecting(plain.url + "accept"), server_tls)
    outcome = await ask(_https(running, ca=certs.cert, cert=certs.cert, key=certs.key))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.REFUSED
    assert outcome.message.endswith(f"redirected to {plain.url}accept, not followed")
    assert plain.seen == []


@pytest.mark.parametrize(
    ("url", "location", "expected"),
    [
        ("http://a/accept", "https://a/accept", "https://a/accept"),
        ("http://a/accept", "/v2/accept", "http://a/v2/accept"),
        ("https://a/ep/accept", "../v2/accept", "https://a/v2/accept"),
        ("https://a/accept", "https://b:8443/accept", "https://b:8443/accept"),
        ("https://a/accept", "http://a/accept", None),
        ("http://a/accept", "ftp://a/accept", None),
        ("http://a/accept", "", None),
    ],
)
def test_redirects_go_to_the_same_scheme_or_up_to_https(
    url: str, location: str, expected: str | None
) -> None:
    assert redirect_target(url, location) == expected


def test_the_ep_command_imports_aiohttp_only_to_ask_a_site_over_http() -> None:
    code = "import sys, ep_server.client.cli; print('aiohttp' in sys.modules)"
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


async def test_https_to_a_plaintext_server_is_a_tls_failure(stub: StartStub) -> None:
    running = await stub(answering({"reponseword": "YES", **OFFER}))
    outcome = await ask(Site("mixed up", running.url.replace("http:", "https:")))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.TLS
    assert outcome.attempts == 1


async def test_plaintext_to_a_tls_server_suggests_https(
    stub: StartStub, server_tls: ssl.SSLContext
) -> None:
    running = await stub(answering({"reponseword": "YES", **OFFER}), server_tls)
    outcome = await ask(Site("mixed up", running.url.replace("https:", "http:")))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.UNREACHABLE
    assert outcome.message.endswith("try https://")
