"""Who the caller is, on a real server: static bearer tokens, JWTs checked
against a JWKS, and anonymous calls where the configuration allows them.

The identity reaches the plugins (``query.identity``). A token the site does
not know, or an expired JWT, is UNAUTHENTICATED with an ``ErrorInfo`` reason,
even for an RPC that may be called anonymously; an RPC not listed as
anonymous needs credentials.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from live_server import TOKEN, Recorder, Start, ask, bearer, error_info, servers, tokens_file

from ep_server.pb import execution_planner_pb2 as pb


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as run:
        yield run


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


async def test_credentials_a_site_cannot_verify_are_refused_not_ignored(start):
    _, stub = await start({}, Recorder())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(ask(), metadata=bearer("some-token-from-another-site"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(info.value).reason == "TOKEN_UNKNOWN"


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
