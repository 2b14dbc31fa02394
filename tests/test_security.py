"""Issue 6 on a real server: TLS, mTLS, identities, policy, limits,
request ids, metrics, JSON logs and tracing."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
import urllib.request

import grpc
import jwt
import pytest
from certs import CA
from cryptography.hazmat.primitives.asymmetric import ec
from fake_plugins.common import FakeSource, Offering, SlowAsync
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ep_server import Cause, Reason, TaskQuery, hookimpl
from ep_server.host import detect_host
from ep_server.logs import JsonFormatter, RequestIdFilter
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import start_server
from ep_server.testing import build_settings

DOCKER = "uri://docker-container"
TOKEN = "alice-secret-token-0123456789abcdef"


class Recorder:
    """Offers, and remembers who asked."""

    def __init__(self) -> None:
        self.identities = []
        self.offering = Offering("uri://docker-uws", DOCKER)

    @hookimpl
    def ep_claims(self):
        return self.offering.ep_claims()

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery):
        self.identities.append(query.identity)
        return await self.offering.ep_evaluate(query)


class AstroOnly:
    """Site policy: docker tasks only for members of the astro group."""

    @hookimpl
    def ep_policy(self, query: TaskQuery):
        if query.tasktype == DOCKER and "astro" not in query.identity.groups:
            return Reason("GROUP_REQUIRED", "docker tasks are for the astro group", Cause.POLICY)
        return None


@pytest.fixture
async def start():
    running = []

    async def run(config, *plugins, channel_credentials=None, target_host="127.0.0.1"):
        settings = build_settings(config)
        sources = [FakeSource(f"p{i}", p) for i, p in enumerate(plugins)]
        server = await start_server(settings, load_registry(settings, detect_host(), sources))
        address = f"{target_host}:{server.port}"
        if channel_credentials is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            channel = grpc.aio.secure_channel(address, channel_credentials)
        running.append((server, channel))
        return server, pb_grpc.ExecutionPlannerServiceStub(channel)

    yield run
    for server, channel in running:
        await channel.close()
        await server.shutdown(0)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def ask(tasktype=DOCKER):
    return pb.AskRequest(tasktype=tasktype)


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


# --- TLS -------------------------------------------------------------------


async def test_tls(tmp_path, start):
    ca = CA(tmp_path)
    server_pair = ca.issue("localhost", server=True)
    creds = grpc.ssl_channel_credentials(ca.pem.read_bytes())
    config = {"tls": {"cert": str(server_pair.cert), "key": str(server_pair.key)}}
    _, stub = await start(config, Recorder(), channel_credentials=creds, target_host="localhost")
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES


async def test_a_plaintext_client_cannot_talk_to_a_tls_server(tmp_path, start):
    ca = CA(tmp_path)
    pair = ca.issue("localhost", server=True)
    server, _ = await start({"tls": {"cert": str(pair.cert), "key": str(pair.key)}}, Recorder())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.ExecutionPlannerServiceStub(channel).Ask(ask(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def mtls_config(ca, server_pair):
    """Server config: TLS with ``server_pair``, client certificates from ``ca`` required."""
    return {
        "tls": {
            "cert": str(server_pair.cert),
            "key": str(server_pair.key),
            "client_ca": str(ca.pem),
            "require_client_cert": True,
        }
    }


async def test_mutual_tls_identifies_the_client(tmp_path, start):
    ca = CA(tmp_path)
    server_pair, client_pair = ca.issue("localhost", server=True), ca.issue("alice")
    config = mtls_config(ca, server_pair)
    creds = grpc.ssl_channel_credentials(
        ca.pem.read_bytes(), client_pair.key.read_bytes(), client_pair.cert.read_bytes()
    )
    recorder = Recorder()
    server, stub = await start(config, recorder, channel_credentials=creds, target_host="localhost")
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES
    [identity] = recorder.identities
    assert identity.method == "mtls"
    assert "CN=alice" in identity.subject
    # Without a client certificate the handshake itself fails.
    no_cert = grpc.ssl_channel_credentials(ca.pem.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{server.port}", no_cert) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.ExecutionPlannerServiceStub(channel).Ask(ask(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(tmp_path, start):
    ca, rogue = CA(tmp_path), CA(tmp_path, "rogue CA")
    server_pair, mallory = ca.issue("localhost", server=True), rogue.issue("mallory")
    config = mtls_config(ca, server_pair)
    creds = grpc.ssl_channel_credentials(
        ca.pem.read_bytes(), mallory.key.read_bytes(), mallory.cert.read_bytes()
    )
    _, stub = await start(config, Recorder(), channel_credentials=creds, target_host="localhost")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# --- identities ------------------------------------------------------------


def tokens_file(tmp_path):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    path = tmp_path / "tokens.toml"
    path.write_text(f'[tokens.alice]\ntoken_sha256 = "{digest}"\ngroups = ["astro"]\n')
    return path


async def test_static_tokens_identify_callers_and_reach_plugins(tmp_path, start):
    recorder = Recorder()
    _, stub = await start({"auth": {"tokens_file": str(tokens_file(tmp_path))}}, recorder)
    await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)
    await stub.Ask(ask(), timeout=10)  # Ask may be anonymous by default
    assert [(i.subject, i.method, set(i.groups)) for i in recorder.identities] == [
        ("alice", "token", {"astro"}),
        ("anonymous", "anonymous", set()),
    ]


async def test_a_wrong_token_is_unauthenticated_even_where_anonymous_is_allowed(tmp_path, start):
    _, stub = await start({"auth": {"tokens_file": str(tokens_file(tmp_path))}}, Recorder())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), metadata=bearer("not-the-token"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(info.value).reason == "TOKEN_UNKNOWN"
    assert "not-the-token" not in info.value.details()


async def test_rpcs_not_listed_as_anonymous_need_credentials(tmp_path, start):
    config = {"auth": {"tokens_file": str(tokens_file(tmp_path)), "anonymous": ["Ask"]}}
    _, stub = await start(config, Recorder())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetServiceInfo(pb.GetServiceInfoRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(info.value).reason == "CREDENTIALS_REQUIRED"
    reply = await stub.GetServiceInfo(
        pb.GetServiceInfoRequest(), metadata=bearer(TOKEN), timeout=10
    )
    assert reply.plugins


def jwks(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def mint(key, **claims):
    now = int(time.time())
    body = {"iss": "https://issuer.example", "sub": "bob", "exp": now + 300, "iat": now, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})


async def test_jwts_identify_callers(tmp_path, start):
    key, path = jwks(tmp_path)
    config = {"auth": {"jwt_issuer": "https://issuer.example", "jwks_file": str(path)}}
    recorder = Recorder()
    _, stub = await start(config, recorder)
    await stub.Ask(ask(), metadata=bearer(mint(key, groups=["astro"])), timeout=10)
    [identity] = recorder.identities
    assert (identity.subject, identity.method, set(identity.groups)) == ("bob", "jwt", {"astro"})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), metadata=bearer(mint(key, exp=int(time.time()) - 3600)), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(info.value).reason == "TOKEN_EXPIRED"


# --- policy ----------------------------------------------------------------


async def test_a_policy_plugin_refuses_by_group(tmp_path, start):
    digest = hashlib.sha256(b"carol-token-0123456789abcdef-xyz").hexdigest()
    path = tokens_file(tmp_path)
    path.write_text(path.read_text() + f'[tokens.carol]\ntoken_sha256 = "{digest}"\n')
    recorder = Recorder()
    _, stub = await start({"auth": {"tokens_file": str(path)}}, recorder, AstroOnly())
    assert (await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)).responseword == pb.YES
    carol = await stub.Ask(ask(), metadata=bearer("carol-token-0123456789abcdef-xyz"), timeout=10)
    assert carol.responseword == pb.NO
    assert [(r.code, r.cause, r.plugin) for r in carol.reasons] == [
        ("GROUP_REQUIRED", pb.REASON_CAUSE_POLICY, "p1")
    ]
    assert len(recorder.identities) == 1  # refused before any plugin evaluated


# --- limits ----------------------------------------------------------------


def assert_exhausted(error: grpc.aio.AioRpcError, reason: str) -> None:
    """RESOURCE_EXHAUSTED with ErrorInfo ``reason`` and RetryInfo (when to retry)."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == reason
    status = rpc_status.from_call(error)
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert retry, "RESOURCE_EXHAUSTED carries RetryInfo"


async def test_the_ask_rate_limit_is_per_identity(tmp_path, start):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"ask_rate": 0.5, "ask_burst": 2},
    }
    _, stub = await start(config, Recorder())
    for _ in range(2):
        await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)
    assert_exhausted(info.value, "RATE_LIMITED")
    # Another caller (anonymous, by address) has its own bucket.
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES


async def test_an_address_that_keeps_failing_to_authenticate_is_refused_unchecked(tmp_path, start):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"auth_failure_rate": 0.2, "auth_failure_burst": 3},
    }
    _, stub = await start(config, Recorder())
    # the burst of failures: each one UNAUTHENTICATED
    await assert_unauthenticated(stub, [f"guess-{i}-0123456789abcdef" for i in range(3)])
    # Then no guess is checked: not a wrong one, nor (from this address) a right one.
    for token in ("guess-3-0123456789abcdef", TOKEN):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ask(ask(), metadata=bearer(token), timeout=10)
        assert_exhausted(info.value, "AUTH_FAILURES")
    # Calls without credentials are not held up.
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES


async def test_repeating_one_wrong_token_counts_once(tmp_path, start):
    """One token sent to many sites (the ep client's way), some of which do
    not know it: repeating it teaches nothing and must not lock out others
    behind the same address."""
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"auth_failure_rate": 0.01, "auth_failure_burst": 2},
    }
    _, stub = await start(config, Recorder())
    await assert_unauthenticated(stub, ["not-this-site-0123456789abcdef"] * 10)
    assert (await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)).responseword == pb.YES


async def assert_unauthenticated(stub, tokens) -> None:
    """Each token, in turn, is refused as UNAUTHENTICATED (not rate limited)."""
    for token in tokens:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ask(ask(), metadata=bearer(token), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:192.0.2.7:5555", "ipv4:192.0.2.7"),
        ("ipv6:[2001:db8:1:2::7]:5555", "ipv6:2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2:ffff:ffff:ffff:ffff]:1", "ipv6:2001:db8:1:2::/64"),
        ("ipv6:[::ffff:192.0.2.7]:80", "ipv4:192.0.2.7"),
        ("ipv6:[fe80::1%eth0]:80", "ipv6:fe80::/64"),
        ("ipv6:%5B2001:db8:1:2::7%5D:5555", "ipv6:2001:db8:1:2::/64"),
    ],
)
def test_limits_count_ipv4_hosts_and_ipv6_networks(peer, key):
    """An IPv6 host holds a whole /64: a fresh address per guess must not
    mean a fresh bucket."""
    from ep_server.pipeline import _peer_host

    assert _peer_host(peer) == key


async def test_a_real_ipv6_peer_is_counted_by_its_network():
    """gRPC writes IPv6 peers percent-encoded (ipv6:%5B::1%5D:port)."""
    from ep_server.pipeline import _peer_host

    seen = []

    async def echo(request: bytes, context) -> bytes:
        seen.append(_peer_host(context.peer()))
        return b""

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"M": handler}),))
    port = server.add_insecure_port("[::1]:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
            await channel.unary_unary("/t.T/M")(b"", timeout=10)
    finally:
        await server.stop(0)
    assert seen == ["ipv6:::/64"]


async def test_failed_authentication_limit_off_and_successes_never_count(tmp_path, start):
    config = {
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "limits": {"auth_failure_rate": 0, "auth_failure_burst": 1},
    }
    _, stub = await start(config, Recorder())
    await assert_unauthenticated(stub, [f"guess-{i}-0123456789abcdef" for i in range(5)])
    config["limits"] = {"auth_failure_rate": 0.2, "auth_failure_burst": 1}
    _, stub = await start(config, Recorder())
    for _ in range(5):  # good credentials take nothing from the failure bucket
        assert (await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)).responseword == pb.YES


async def test_max_concurrent_rpcs_is_enforced(start):
    _, stub = await start({"limits": {"max_concurrent_rpcs": 1}}, SlowAsync("uri://slow", 0.5))
    calls = [stub.Ask(ask("uri://slow"), timeout=10) for _ in range(3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    codes = sorted(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    assert "OK" in codes
    assert "RESOURCE_EXHAUSTED" in codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    refused = next(r for r in results if isinstance(r, grpc.aio.AioRpcError))
    assert error_info(refused).reason == "TOO_MANY_REQUESTS"


# --- observability ---------------------------------------------------------


async def test_every_call_gets_a_request_id_back(start):
    _, stub = await start({}, Recorder())
    call = stub.Ask(ask(), timeout=10)
    await call
    trailer = dict(await call.trailing_metadata())
    assert len(trailer["x-request-id"]) == 32
    call = stub.Ask(ask(), metadata=(("x-request-id", "trace-123"),), timeout=10)
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == "trace-123"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(pb.AskRequest(tasktype="bad"), metadata=(("x-request-id", "e-1"),))
    assert dict(info.value.trailing_metadata())["x-request-id"] == "e-1"


async def test_json_logs_carry_the_request_id(start):
    from fake_plugins.common import Raising

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        _, stub = await start({}, Raising(DOCKER))
        call = stub.Ask(ask(), metadata=(("x-request-id", "find-me-42"),), timeout=10)
        await call
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failures = [e for e in lines if "raised" in e["message"]]
    assert failures
    assert failures[0]["request_id"] == "find-me-42"
    assert "plugin bug" in failures[0]["exception"]


async def test_prometheus_metrics_on_their_own_port(start):
    server, stub = await start({"metrics": {"listen": "127.0.0.1:0"}}, Recorder())
    await stub.Ask(ask(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Ask(pb.AskRequest(tasktype="bad"), timeout=10)
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'ep_rpc_requests_total{code="OK",method="Ask"} 1.0' in text
    assert 'ep_rpc_requests_total{code="INVALID_ARGUMENT",method="Ask"} 1.0' in text
    assert 'ep_plugin_evaluations_total{outcome="yes",plugin="p0"} 1.0' in text
    assert 'ep_ask_answers_total{responseword="YES"} 1.0' in text
    assert "ep_rpc_duration_seconds_bucket" in text


async def test_opentelemetry_spans_when_tracing_is_enabled(start):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _, stub = await start({"tracing": {"enabled": True}}, Recorder())
    await stub.Ask(ask(), timeout=10)
    names = [span.name for span in exporter.get_finished_spans()]
    assert "/ivoa.ep.v1.ExecutionPlannerService/Ask" in names


async def test_credentials_a_site_cannot_verify_are_refused_not_ignored(start):
    _, stub = await start({}, Recorder())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), metadata=bearer("some-token-from-another-site"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(info.value).reason == "TOKEN_UNKNOWN"


def test_a_client_ca_without_required_client_certs_is_a_config_error(tmp_path):
    from ep_server.errors import ConfigError

    ca = CA(tmp_path)
    pair = ca.issue("localhost", server=True)
    path = tmp_path / "ep.toml"
    path.write_text(
        f'[tls]\ncert = "{pair.cert.name}"\nkey = "{pair.key.name}"\nclient_ca = "{ca.pem.name}"\n'
    )
    from ep_server.config import load_settings

    with pytest.raises(ConfigError, match="client_ca and require_client_cert"):
        load_settings(path, environ={})
    path.write_text(path.read_text() + "require_client_cert = true\n")
    tls = load_settings(path, environ={}).tls
    assert tls.client_ca == ca.pem  # relative to the config file's folder


def test_the_ep_command_speaks_tls_and_sends_tokens(tmp_path, capsys, monkeypatch):
    from ep_server.client.cli import main
    from ep_server.testing import EPTestServer

    ca = CA(tmp_path)
    pair = ca.issue("localhost", server=True)
    config = {
        "tls": {"cert": str(pair.cert), "key": str(pair.key)},
        "auth": {"tokens_file": str(tokens_file(tmp_path)), "anonymous": ["Ask"]},
    }
    settings = build_settings(config)
    server = EPTestServer(
        settings, load_registry(settings, detect_host(), [FakeSource("r", Recorder())])
    )
    try:
        address = f"localhost:{server.port}"
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        common = ["--ca", str(ca.pem), "--deadline", "10"]
        assert main(["ask", "--tasktype", DOCKER, "--endpoint", address, *common]) == 0
        assert main(["info", address, *common]) == 1  # GetServiceInfo needs a token here
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert main(["info", address, *common, "--token-file", str(token)]) == 0
        monkeypatch.setenv("EP_TOKEN", TOKEN)
        assert main(["info", address, *common]) == 0
        assert main(["info", address, "--deadline", "5"]) == 1  # plaintext to a TLS server
        assert main(["info", address, "--cert", str(pair.cert)]) == 2  # --cert without --key
    finally:
        server.close()


async def test_a_client_pinging_too_often_is_told_to_calm_down(start, capfd):
    """The keepalive policy: pings from an idle client more often than
    min_ping_interval get GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings"), the
    server carries on, and a well-behaved reconnect is served."""
    server, stub = await start({"limits": {"min_ping_interval": 10}}, Recorder())
    pinging = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=pinging) as channel:
        await pb_grpc.ExecutionPlannerServiceStub(channel).Ask(ask(), timeout=10)
        deadline = time.monotonic() + 10
        seen = ""
        while "too_many_pings" not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            seen += capfd.readouterr().err
    assert "too_many_pings" in seen, "the server did not enforce its ping policy"
    assert (await stub.Ask(ask(), timeout=10)).responseword == pb.YES
