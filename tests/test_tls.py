"""TLS and mutual TLS on a real server, and their configuration.

A TLS server answers a client that trusts its CA and not a plaintext one;
with client certificates required, a client certificate from the configured
CA identifies the caller (method "mtls") and one from another CA, or none,
fails the handshake. A client CA without ``require_client_cert`` is a
configuration error. The ``ep`` command speaks TLS and sends bearer tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from certs import CA
from fake_plugins.common import FakeSource
from live_server import DOCKER, TOKEN, Recorder, Start, ask, servers, tokens_file

from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.testing import build_settings


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as run:
        yield run


async def test_a_tls_server_answers_a_client_that_trusts_its_ca(tmp_path, start):
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


@pytest.mark.parametrize("with_rogue_cert", [False, True], ids=["no-cert", "rogue-cert"])
async def test_the_client_reports_a_refused_handshake_as_tls_and_tries_once(
    tmp_path, start, with_rogue_cert
):
    from ep_server.client import Client, FailureKind, Site, TaskQuery
    from ep_server.client.sites import TLS

    ca, rogue = CA(tmp_path), CA(tmp_path, "rogue CA")
    server, _ = await start(mtls_config(ca, ca.issue("localhost", server=True)), Recorder())
    mallory = rogue.issue("mallory")
    tls = TLS(ca.pem, mallory.cert, mallory.key) if with_rogue_cert else TLS(ca.pem)
    async with Client() as client:
        site = Site("s", f"localhost:{server.port}", tls)
        [result] = [r async for r in client.ask_many([site], TaskQuery(DOCKER, {}), deadline=10)]
    failure = result.outcome
    assert failure.kind is FailureKind.TLS
    assert failure.attempts == 1
    hint = "may not trust the client certificate" if with_rogue_cert else "client certificate"
    assert hint in failure.message
    assert "closed the connection during the TLS handshake" in failure.message
