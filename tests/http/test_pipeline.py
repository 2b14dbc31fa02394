"""HTTP calls go through the same pipeline as gRPC calls: the same rate
limit (one bucket per caller, whichever door it uses; 429 with
``Retry-After``), the same concurrency limit, the same credentials (bearer
tokens, JWTs, and a client certificate that is one identity on both doors),
the same RPC metrics beside the HTTP ones by route and status, and the same
JSON access log lines with the request id and the transport."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import ssl
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from certs import CA
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from fake_plugins.common import SlowAsync
from google.protobuf import json_format
from http_site import DOCKER, SEED
from live_server import TOKEN, Recorder, bearer, tokens_file
from schedule.rpc_site import HOUR, T0, Booker, Clock

from ep_server.logs import JsonFormatter, RequestIdFilter
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_ask_rate_limit_is_one_bucket_per_caller_on_both_doors(site, tmp_path):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"ask_rate": 0.5, "ask_burst": 3},
    }
    s = await site(config, Recorder())
    assert (await s.post("/v1/ask", json=SEED, headers=auth(TOKEN))).status == 200
    await s.stub.Ask(pb.AskRequest(tasktype=DOCKER), metadata=bearer(TOKEN), timeout=10)
    assert (await s.post("/v1/ask", json=SEED, headers=auth(TOKEN))).status == 200
    limited = await s.post("/v1/ask", json=SEED, headers=auth(TOKEN))
    assert limited.status == 429
    assert limited.json["code"] == 8  # RESOURCE_EXHAUSTED
    assert limited.reason() == "RATE_LIMITED"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in limited.json["details"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s.stub.Ask(pb.AskRequest(tasktype=DOCKER), metadata=bearer(TOKEN), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # An anonymous caller has a bucket of its own.
    assert (await s.post("/v1/ask", json=SEED)).status == 200


async def test_the_concurrency_limit_counts_http_calls(site):
    s = await site({"limits": {"max_concurrent_rpcs": 1}}, SlowAsync("uri://slow", 0.5))
    replies = await asyncio.gather(
        *(s.post("/v1/ask", json={"tasktype": "uri://slow"}) for _ in range(3))
    )
    statuses = sorted(r.status for r in replies)
    assert statuses[0] == 200
    assert set(statuses) == {200, 429}
    refused = next(r for r in replies if r.status == 429)
    assert refused.reason() == "TOO_MANY_REQUESTS"
    assert refused.headers["Retry-After"] == "1"


async def test_a_client_slow_to_send_its_body_holds_no_call_slot(site):
    """The body is read before the call is admitted, as gRPC reads a whole
    message before its handler runs: a client stalled mid-body must not
    hold one of max_concurrent_rpcs."""
    s = await site({"limits": {"max_concurrent_rpcs": 1}})
    _, stalled = await asyncio.open_connection("127.0.0.1", s.running.http_port)
    stalled.write(
        b"POST /v1/ask HTTP/1.1\r\nHost: ep\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await stalled.drain()
    await asyncio.sleep(0.1)
    try:
        answer = await s.stub.Ask(pb.AskRequest(tasktype=DOCKER), timeout=10)
        assert answer.responseword == pb.YES
        assert (await s.post("/v1/ask", json=SEED)).status == 200
    finally:
        stalled.close()


def jwks(tmp_path: Any) -> tuple[ec.EllipticCurvePrivateKey, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def mint(key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://issuer.example", "sub": "bob", "exp": now + 300, "iat": now, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})


async def test_a_jwt_in_authorization_identifies_the_caller(site, tmp_path):
    key, path = jwks(tmp_path)
    recorder = Recorder()
    config = {"auth": {"jwt_issuer": "https://issuer.example", "jwks_file": str(path)}}
    s = await site(config, recorder)
    reply = await s.post("/v1/ask", json=SEED, headers=auth(mint(key, groups=["astro"])))
    assert reply.status == 200
    [identity] = recorder.identities
    assert (identity.subject, identity.method, set(identity.groups)) == ("bob", "jwt", {"astro"})
    expired = await s.post("/v1/ask", json=SEED, headers=auth(mint(key, exp=int(time.time()) - 60)))
    assert (expired.status, expired.reason()) == (401, "TOKEN_EXPIRED")
    assert "WWW-Authenticate" in expired.headers


def client_context(ca: CA, pair: Any = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.pem))
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


def grpc_credentials(ca: CA, pair: Any) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        ca.pem.read_bytes(), pair.key.read_bytes(), pair.cert.read_bytes()
    )


async def test_a_client_certificate_is_one_identity_on_both_doors(site, tmp_path):
    ca = CA(tmp_path)
    server, alice, bob = ca.issue("localhost", server=True), ca.issue("alice"), ca.issue("bob")
    config = {
        "tls": {
            "cert": str(server.cert),
            "key": str(server.key),
            "client_ca": str(ca.pem),
            "require_client_cert": True,
        },
        "schedule": {"pools": {"cores": 8, "memory": "16GiB"}},
    }
    s = await site(
        config,
        Booker(),
        clock=Clock(),
        channel_credentials=grpc_credentials(ca, alice),
        ssl=client_context(ca, alice),
    )
    request = {
        **SEED,
        "schedule": {
            "windows": [{"start": T0.isoformat(), "end": (T0 + 8 * HOUR).isoformat()}],
            "min_duration": "3600s",
        },
    }
    # Booked over gRPC with alice's certificate...
    answer = await s.stub.Ask(json_format.ParseDict(request, pb.AskRequest()), timeout=10)
    accepted = await s.stub.AcceptOffer(
        pb.AcceptOfferRequest(offer_id=answer.offers[0].id), timeout=10
    )
    assert "CN=alice" in accepted.booking.owner
    # ...listed over HTTPS with the same certificate.
    listed = await s.get("/v1/bookings")
    assert listed.status == 200
    assert [b["id"] for b in listed.json["bookings"]] == [accepted.booking.id]
    assert listed.json["bookings"][0]["owner"] == accepted.booking.owner
    # Another certificate is another caller; no certificate, no handshake.
    s.ssl = client_context(ca, bob)
    assert (await s.get("/v1/bookings")).json == {}
    s.ssl = client_context(ca)
    with pytest.raises(aiohttp.ClientError):  # refused in or just after the handshake
        await s.get("/v1/bookings")


def _subject(*rdns: list[tuple[x509.ObjectIdentifier, str] | tuple[Any, ...]]) -> x509.Name:
    """A subject of RDNs, each a list of (type, value[, ASN.1 string type])."""
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(*a) for a in rdn]) for rdn in rdns]
    )


#: Subjects whose text OpenSSL-style printing (gRPC's) and RFC 4514 as the
#: cryptography package writes it tell apart.
SUBJECTS = {
    "email": _subject([(NameOID.COMMON_NAME, "alice")], [(NameOID.EMAIL_ADDRESS, "a@example.org")]),
    "utf-8": _subject([(NameOID.ORGANIZATION_NAME, "Sternwarte")], [(NameOID.COMMON_NAME, "Zoë")]),
    "bmp": _subject([(NameOID.COMMON_NAME, "Zoë Müller", _ASN1Type.BMPString)]),
    "given name and serial": _subject(
        [(NameOID.SERIAL_NUMBER, "1234")], [(NameOID.GIVEN_NAME, "Bob"), (NameOID.SURNAME, "B")]
    ),
    "specials": _subject([(NameOID.COMMON_NAME, '#a\x01b "<x>"; c+d=e, ')]),
    "multi-valued": _subject(
        [(NameOID.COMMON_NAME, "carol"), (NameOID.USER_ID, "c1")],
        [(NameOID.DOMAIN_COMPONENT, "org")],
    ),
    "unnamed types": _subject(
        [(NameOID.JURISDICTION_COUNTRY_NAME, "DE")],
        [(x509.ObjectIdentifier("1.2.3.4.5"), "x")],
        [(NameOID.ORGANIZATION_IDENTIFIER, "VATDE-1")],
    ),
}


async def test_a_client_certificate_is_the_same_identity_on_both_doors_whatever_its_subject(
    site, tmp_path, access_log
):
    ca = CA(tmp_path)
    server = ca.issue("localhost", server=True)
    config = {
        "tls": {
            "cert": str(server.cert),
            "key": str(server.key),
            "client_ca": str(ca.pem),
            "require_client_cert": True,
        },
        "logging": {"access_log": True, "format": "json"},
    }
    s = await site(config, ssl=client_context(ca, server))
    for n, (label, subject) in enumerate(SUBJECTS.items()):
        pair = ca.issue(f"client{n}", subject=subject)
        address = f"localhost:{s.running.port}"
        async with grpc.aio.secure_channel(address, grpc_credentials(ca, pair)) as channel:
            stub = pb_grpc.ExecutionPlannerServiceStub(channel)
            await stub.GetServiceInfo(
                pb.GetServiceInfoRequest(), metadata=(("x-request-id", f"grpc-{n}"),), timeout=10
            )
        s.ssl = client_context(ca, pair)
        await s.get("/v1/serviceinfo", headers={"x-request-id": f"http-{n}"})
        lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
        by_id = {line["request_id"]: line["identity"] for line in lines}
        assert by_id[f"http-{n}"] == by_id[f"grpc-{n}"], label


async def test_http_calls_count_in_the_rpc_and_the_http_metrics(site):
    s = await site()
    await s.post("/v1/ask", json=SEED)
    await s.post("/v1/ask", json={"tasktype": "docker"})
    await s.get("/v1/serviceinfo")
    await s.get("/v1/nothing-here")
    await s.request("DELETE", "/v1/ask")
    await s.stub.Ask(pb.AskRequest(tasktype=DOCKER), timeout=10)
    registry = s.running.metrics.registry

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("ep_rpc_requests_total", method="Ask", code="OK") == 2  # one per door
    assert sample("ep_rpc_requests_total", method="Ask", code="INVALID_ARGUMENT") == 1
    assert sample("ep_rpc_requests_total", method="GetServiceInfo", code="OK") == 1
    assert sample("ep_http_requests_total", route="POST /v1/ask", status="200") == 1
    assert sample("ep_http_requests_total", route="POST /v1/ask", status="400") == 1
    assert sample("ep_http_requests_total", route="GET /v1/serviceinfo", status="200") == 1
    # A client's path never becomes a label.
    assert sample("ep_http_requests_total", route="unmatched", status="404") == 1
    assert sample("ep_http_requests_total", route="unmatched", status="405") == 1
    assert sample("ep_http_request_duration_seconds_count", route="POST /v1/ask") == 2
    assert sample("ep_ask_answers_total", responseword="YES") == 2


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """The access log's lines, as ``[logging] format = "json"`` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ep_server.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_the_json_access_log_has_a_line_per_http_request(site, access_log):
    s = await site({"logging": {"access_log": True, "format": "json"}})
    await s.post("/v1/ask", json=SEED, headers={"x-request-id": "find-me-1"})
    refused = await s.post("/v1/ask", json={"tasktype": 5})
    missing = await s.get("/v1/nothing-here", headers={"x-request-id": "find-me-404"})
    await s.stub.Ask(pb.AskRequest(tasktype=DOCKER), metadata=(("x-request-id", "by-grpc"),))
    lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
    by_id = {line.get("request_id"): line for line in lines}
    assert by_id["find-me-1"]["transport"] == "http"
    assert (by_id["find-me-1"]["rpc"], by_id["find-me-1"]["code"]) == ("Ask", "OK")
    bad = by_id[refused.headers["x-request-id"]]
    assert (bad["transport"], bad["code"]) == ("http", "INVALID_ARGUMENT")
    assert by_id["by-grpc"]["transport"] == "grpc"
    # A request that ran no RPC has its line, and its id, too.
    assert missing.headers["x-request-id"] == "find-me-404"
    assert by_id["find-me-404"]["transport"] == "http"
    assert by_id["find-me-404"]["http_status"] == 404
    assert len(lines) == 4


async def test_without_the_access_log_http_requests_log_nothing(site, access_log):
    s = await site()
    await s.post("/v1/ask", json=SEED)
    await s.get("/v1/nothing-here")
    assert access_log.getvalue() == ""
