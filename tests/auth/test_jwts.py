"""JWTs verified against a JWKS file (:mod:`ep_server.auth.jwts`).

Through the Authenticator, with the fake clock of :mod:`auth.helpers`: a test
passes only if that clock, not the system's, drives the exp/nbf/iat checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from auth.helpers import (
    ALICE_TOKEN,
    AUDIENCE,
    EC_KEY,
    ED_KEY,
    ISSUER,
    NOW,
    OTHER_RSA_KEY,
    PUBLIC_PEM,
    RSA_KEY,
    Clock,
    b64url,
    bearer,
    claims,
    forge_hs256,
    mint,
    public_jwk,
    refused,
    write_json,
)
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ep_server.auth import Authenticator
from ep_server.auth.jwts import looks_like_jwt
from ep_server.config import AuthConfig
from ep_server.errors import ConfigError

# --------------------------------------------------------------------------
# Tokens


def test_valid_rs256_token(auth: Authenticator) -> None:
    identity = auth.from_metadata(bearer(mint()), None)
    assert identity.subject == "alice@example.org"
    assert identity.method == "jwt"
    assert identity.groups == frozenset({"astro", "admins"})
    assert identity.claims["iss"] == ISSUER
    assert not identity.anonymous


def test_valid_es256_token(auth: Authenticator) -> None:
    token = mint(EC_KEY, "ES256", "ec-1", sub="bob", groups=["astro"])
    identity = auth.from_metadata(bearer(token), None)
    assert (identity.subject, identity.method, identity.groups) == ("bob", "jwt", {"astro"})


def test_valid_eddsa_token(auth: Authenticator) -> None:
    identity = auth.from_metadata(bearer(mint(ED_KEY, "EdDSA", "ed-1")), None)
    assert identity.method == "jwt"


def test_groups_are_optional_and_the_claim_name_is_configurable(
    make: Callable[..., Authenticator],
) -> None:
    assert make().from_metadata(bearer(mint(groups=None)), None).groups == frozenset()
    custom = make(groups_claim="roles")
    token = mint(roles=["ops"])
    assert custom.from_metadata(bearer(token), None).groups == frozenset({"ops"})


@pytest.mark.parametrize("groups", ["admins", [1, 2], {"a": 1}, ["ok", None]])
def test_a_groups_claim_that_is_not_a_list_of_strings_is_refused(
    auth: Authenticator, groups: Any
) -> None:
    # A bare string must not become a set of its characters.
    refused(auth, mint(groups=groups), "TOKEN_INVALID")


def test_without_kid_the_only_key_is_used(tmp_path: Path, clock: Clock) -> None:
    jwks = write_json(tmp_path / "one.json", {"keys": [public_jwk(EC_KEY, None)]})
    auth = Authenticator(AuthConfig(jwt_issuer=ISSUER, jwks_file=jwks), clock=clock)
    identity = auth.from_metadata(bearer(mint(EC_KEY, "ES256", kid=None)), None)
    assert identity.method == "jwt"


def test_without_kid_several_keys_are_ambiguous(auth: Authenticator) -> None:
    refused(auth, mint(kid=None), "TOKEN_INVALID")


def test_expired_by_the_injected_clock(auth: Authenticator) -> None:
    # exp lies in the real clock's future, but an hour before the fake clock.
    error = refused(auth, mint(exp=NOW - 3600, iat=NOW - 7200), "TOKEN_EXPIRED")
    assert "expired" in error.message


def test_the_injected_clock_also_accepts_what_the_real_one_would_not(
    make: Callable[..., Authenticator], clock: Clock
) -> None:
    clock.now = 1_000_000_000.0  # 2001: the token expired long ago in real time
    token = mint(iat=clock.now, exp=clock.now + 60)
    assert make().from_metadata(bearer(token), None).method == "jwt"
    clock.now += 61 + 30  # past exp plus the default leeway
    refused(make(), token, "TOKEN_EXPIRED")


def test_leeway_allows_clock_skew(make: Callable[..., Authenticator]) -> None:
    auth = make(jwt_leeway=30)
    assert auth.from_metadata(bearer(mint(exp=NOW - 29)), None).method == "jwt"
    refused(auth, mint(exp=NOW - 30), "TOKEN_EXPIRED")
    strict = make(jwt_leeway=0)
    refused(strict, mint(exp=NOW), "TOKEN_EXPIRED")


def test_not_yet_valid(make: Callable[..., Authenticator]) -> None:
    auth = make(jwt_leeway=30)
    refused(auth, mint(nbf=NOW + 31), "TOKEN_NOT_YET_VALID")
    assert auth.from_metadata(bearer(mint(nbf=NOW + 29)), None).method == "jwt"


def test_issued_in_the_future(auth: Authenticator) -> None:
    refused(auth, mint(iat=NOW + 3600), "TOKEN_NOT_YET_VALID")


@pytest.mark.parametrize("bad", [math.nan, math.inf, "2099-01-01", True, [1], 10**400])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_must_be_finite_numbers(auth: Authenticator, claim: str, bad: Any) -> None:
    # exp=NaN would pass every comparison, exp=Infinity would never expire.
    refused(auth, mint(**{claim: bad}), "TOKEN_INVALID")


def test_wrong_issuer(auth: Authenticator) -> None:
    refused(auth, mint(iss="https://evil.example.org"), "WRONG_ISSUER")
    refused(auth, mint(iss=None), "WRONG_ISSUER")


def test_wrong_audience(auth: Authenticator) -> None:
    refused(auth, mint(aud="other-service"), "WRONG_AUDIENCE")
    refused(auth, mint(aud=None), "WRONG_AUDIENCE")


def test_audience_may_be_one_of_a_list(auth: Authenticator) -> None:
    token = mint(aud=["other-service", AUDIENCE])
    assert auth.from_metadata(bearer(token), None).method == "jwt"


def test_without_a_configured_audience_aud_is_not_checked(
    make: Callable[..., Authenticator],
) -> None:
    auth = make(jwt_audience=None)
    assert auth.from_metadata(bearer(mint(aud="anything")), None).method == "jwt"
    assert auth.from_metadata(bearer(mint(aud=None)), None).method == "jwt"


@pytest.mark.parametrize("sub", [None, "", "  ", 42])
def test_a_token_needs_a_subject(auth: Authenticator, sub: Any) -> None:
    refused(auth, mint(sub=sub), "TOKEN_INVALID")


def test_a_token_needs_exp(auth: Authenticator) -> None:
    refused(auth, mint(exp=None), "TOKEN_INVALID")


def test_unknown_kid(auth: Authenticator) -> None:
    error = refused(auth, mint(kid="rsa-2"), "TOKEN_INVALID")
    assert "key" in error.message


def test_signed_by_another_key(auth: Authenticator) -> None:
    refused(auth, mint(OTHER_RSA_KEY, kid="rsa-1"), "TOKEN_INVALID")


def test_tampered_payload(auth: Authenticator) -> None:
    header, _, signature = mint().split(".")
    payload = b64url(json.dumps(claims(sub="root")).encode())
    refused(auth, f"{header}.{payload}.{signature}", "TOKEN_INVALID")


def test_alg_none_is_refused(auth: Authenticator) -> None:
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": "rsa-1"})
    assert token.endswith(".")  # an unsigned token: empty signature segment
    refused(auth, token, "TOKEN_INVALID")
    refused(auth, token + "c2ln", "TOKEN_INVALID")  # with a made-up signature


@pytest.mark.parametrize(
    "secret",
    [PUBLIC_PEM, json.dumps(public_jwk(RSA_KEY, "rsa-1")).encode()],
    ids=["pem", "jwk-json"],
)
def test_algorithm_confusion_hs256_with_the_public_key(auth: Authenticator, secret: bytes) -> None:
    refused(auth, forge_hs256(secret), "TOKEN_INVALID")


def test_pyjwt_itself_refuses_a_pem_key_as_hmac_secret() -> None:
    # Defence in depth beneath ours: PyJWT will not use an asymmetric key as
    # an HMAC secret even when HS256 is explicitly allowed.
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(forge_hs256(PUBLIC_PEM), PUBLIC_PEM, algorithms=["HS256"])


def test_algorithm_must_match_the_key(auth: Authenticator) -> None:
    # A valid ES256 signature, but naming the RSA key's kid.
    refused(auth, mint(EC_KEY, "ES256", kid="rsa-1"), "TOKEN_INVALID")
    # RS384 is a fine algorithm, but not one this site accepts.
    refused(auth, mint(alg="RS384"), "TOKEN_INVALID")


def test_an_accepted_algorithm_must_still_be_the_keys_own(
    make: Callable[..., Authenticator],
) -> None:
    # The JWK implies RS256; a PS256 token naming it is refused even when
    # PS256 is allowed.
    auth = make(jwt_algorithms=("RS256", "PS256"))
    refused(auth, mint(alg="PS256"), "TOKEN_INVALID")


def header_only(header: Any) -> str:
    body = b64url(json.dumps(claims()).encode())
    return f"{b64url(json.dumps(header).encode())}.{body}.c2ln"


@pytest.mark.parametrize(
    "token",
    [
        "aaaa.bbbb.cccc",
        f"{b64url(b'not json')}.{b64url(b'{}')}.c2ln",
        header_only(["RS256"]),
        header_only({"alg": 256, "kid": "rsa-1"}),
        header_only({"alg": "RS256", "kid": ["rsa-1"]}),
        header_only({"alg": "RS256", "kid": "rsa-1"}),
        header_only({"kid": "rsa-1"}),
        f"{b64url(json.dumps({'alg': 'RS256', 'kid': 'rsa-1'}).encode())}.{b64url(b'[1]')}.c2ln",
    ],
)
def test_garbage_jwts_are_invalid_not_crashes(auth: Authenticator, token: str) -> None:
    refused(auth, token, "TOKEN_INVALID")


@pytest.mark.parametrize(
    ("token", "shaped"),
    [
        ("aaaa.bbbb.cccc", True),
        ("aaaa.bbbb.", True),  # an unsigned token's empty signature segment
        ("aaaa.bbbb", False),
        ("aaaa.bbbb.cccc.dddd", False),
        ("aa+a.bbbb.cccc", False),
        (ALICE_TOKEN, False),
    ],
)
def test_which_tokens_have_the_shape_of_a_jwt(token: str, shaped: bool) -> None:
    assert looks_like_jwt(token) is shaped


# --------------------------------------------------------------------------
# The JWKS file


def test_missing_jwks_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.json"):
        Authenticator(AuthConfig(jwt_issuer=ISSUER, jwks_file=tmp_path / "absent.json"))


def jwks_error(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "jwks.json"
    if isinstance(document, str):
        path.write_text(document)
    else:
        write_json(path, document)
    with pytest.raises(ConfigError) as caught:
        Authenticator(AuthConfig(jwt_issuer=ISSUER, jwks_file=path))
    assert str(path) in str(caught.value)
    return str(caught.value)


def private_jwk() -> dict[str, Any]:
    return json.loads(RSAAlgorithm.to_jwk(RSA_KEY))  # type: ignore[no-any-return]


SHORT_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("{not json", "not valid JSON"),
        ([], "JSON Web Key Set"),
        ({"keys": {}}, "JSON Web Key Set"),
        ({"keys": []}, "no signature verification keys"),
        ({"keys": [public_jwk(RSA_KEY, "k", use="enc")]}, "no signature verification keys"),
        ({"keys": ["x"]}, "not a JSON object"),
        ({"keys": [{"kty": "RSA", "n": "AQAB"}]}, "not a usable key"),
        ({"keys": [{"kty": "XYZ"}]}, "not a usable key"),
        ({"keys": [private_jwk()]}, "private key material"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "symmetric"),
        ({"keys": [public_jwk(RSA_KEY, "k"), public_jwk(EC_KEY, "k")]}, "two keys have kid 'k'"),
        ({"keys": [public_jwk(RSA_KEY, 7)]}, "kid must be a string"),
        ({"keys": [public_jwk(SHORT_RSA_KEY, "short")]}, "2048 bits"),
    ],
)
def test_invalid_jwks_file(tmp_path: Path, document: Any, problem: str) -> None:
    assert problem in jwks_error(tmp_path, document)


def test_encryption_keys_in_the_set_are_skipped(tmp_path: Path, clock: Clock) -> None:
    keys = [public_jwk(OTHER_RSA_KEY, "enc-1", use="enc"), public_jwk(RSA_KEY, "rsa-1")]
    jwks = write_json(tmp_path / "jwks.json", {"keys": keys})
    auth = Authenticator(AuthConfig(jwt_issuer=ISSUER, jwks_file=jwks), clock=clock)
    assert auth.from_metadata(bearer(mint()), None).method == "jwt"
    refused(auth, mint(OTHER_RSA_KEY, kid="enc-1"), "TOKEN_INVALID")
