"""Authentication: static tokens, JWTs against a JWKS file, mTLS subjects.

Pure tests of :mod:`ep_server.auth`; no server. Keys are made at run time and
every token is minted here. Token times are relative to a fake clock set years
away from the real one, so a test passes only if that clock, not the system's,
drives the exp/nbf/iat checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from ep_server.auth import Authenticator, AuthError, subject_from_auth_context
from ep_server.config import AuthConfig, load_settings
from ep_server.errors import ConfigError
from ep_server.model import ANONYMOUS, Identity

ISSUER = "https://idp.example.org"
AUDIENCE = "ep.example.org"
#: The fake clock's time: 2033, years after the real clock's.
NOW = 2_000_000_000.0

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()

ALICE_TOKEN = "alice-s3cret-token-0123456789abcdef"
ROBOT_OLD = "robot-old-token-aaaaaaaaaaaaaaaaaaaa"
ROBOT_NEW = "robot-new-token-bbbbbbbbbbbbbbbbbbbb"


class Clock:
    """A settable clock to inject into the Authenticator."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(private_key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of a private key, as an issuer would publish it."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **extra}


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at the fake clock's time; None values are left out."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice@example.org",
        "aud": AUDIENCE,
        "iat": NOW - 10,
        "exp": NOW + 300,
        "groups": ["astro", "admins"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa-1", **overrides: Any
) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def bearer(
    token: str, name: str = "authorization", scheme: str = "Bearer"
) -> list[tuple[str, str]]:
    return [("user-agent", "grpc-python/1.85"), (name, f"{scheme} {token}")]


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    keys = [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1"), public_jwk(ED_KEY, "ed-1")]
    return write_json(tmp_path / "jwks.json", {"keys": keys})


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f"""
[tokens.alice]
token_sha256 = "{sha256(ALICE_TOKEN).upper()}"
groups = ["astro", "admins"]

[tokens."ci-robot"]
token_sha256 = ["{sha256(ROBOT_OLD)}", "{sha256(ROBOT_NEW)}"]
"""
    )
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(jwks_file: Path, tokens_file: Path, clock: Clock) -> Callable[..., Authenticator]:
    """An Authenticator with both token kinds configured; keywords override."""

    def build(**overrides: Any) -> Authenticator:
        settings: dict[str, Any] = {
            "tokens_file": tokens_file,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwks_file": jwks_file,
        }
        settings.update(overrides)
        return Authenticator(AuthConfig(**settings), clock=clock)

    return build


@pytest.fixture
def auth(make: Callable[..., Authenticator]) -> Authenticator:
    return make()


def refused(auth: Authenticator, token: str, reason: str) -> AuthError:
    """Assert the token is refused with ``reason``, and never echoed."""
    with pytest.raises(AuthError) as caught:
        auth.from_metadata(bearer(token), None)
    error = caught.value
    assert error.reason == reason, error.message
    assert token not in str(error)
    assert token not in repr(error)
    return error


# --------------------------------------------------------------------------
# JWTs


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


def forge_hs256(secret: bytes, kid: str = "rsa-1") -> str:
    """An HS256 token whose HMAC secret is public knowledge.

    PyJWT refuses to sign HS256 with a PEM key, so it is put together by hand.
    """
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims(sub="root")).encode())
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{b64url(hmac.digest(secret, signing_input, 'sha256'))}"


PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


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


# --------------------------------------------------------------------------
# Static tokens


def test_static_token(auth: Authenticator) -> None:
    identity = auth.from_metadata(bearer(ALICE_TOKEN), None)
    assert identity == Identity("alice", method="token", groups=frozenset({"astro", "admins"}))


def test_a_subject_may_have_several_tokens(auth: Authenticator) -> None:
    for token in (ROBOT_OLD, ROBOT_NEW):
        identity = auth.from_metadata(bearer(token), None)
        assert (identity.subject, identity.method, identity.groups) == ("ci-robot", "token", set())


def test_unknown_static_token(auth: Authenticator) -> None:
    refused(auth, "not-a-known-token", "TOKEN_UNKNOWN")
    refused(auth, ALICE_TOKEN + "x", "TOKEN_UNKNOWN")


def test_static_tokens_without_jwt(tokens_file: Path) -> None:
    auth = Authenticator(AuthConfig(tokens_file=tokens_file))
    assert auth.from_metadata(bearer(ALICE_TOKEN), None).subject == "alice"
    # JWT-shaped, but JWTs are not configured: just an unknown token.
    refused(auth, mint(), "TOKEN_UNKNOWN")


def test_a_bearer_token_with_nothing_configured_is_refused_not_ignored() -> None:
    refused(Authenticator(AuthConfig()), ALICE_TOKEN, "TOKEN_UNKNOWN")


@pytest.mark.parametrize("name", ["authorization", "Authorization", "AUTHORIZATION"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_header_name_and_scheme_are_case_insensitive(
    auth: Authenticator, name: str, scheme: str
) -> None:
    assert auth.from_metadata(bearer(ALICE_TOKEN, name, scheme), None).subject == "alice"


def test_header_value_as_bytes_and_with_extra_spaces(auth: Authenticator) -> None:
    metadata = [("authorization", f"Bearer {ALICE_TOKEN}".encode())]
    assert auth.from_metadata(metadata, None).subject == "alice"
    metadata2 = [("authorization", f"  Bearer   {ALICE_TOKEN} ")]
    assert auth.from_metadata(metadata2, None).subject == "alice"


# --------------------------------------------------------------------------
# Malformed authorization


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", f"Bearer {ALICE_TOKEN}"), ("authorization", f"Bearer {ALICE_TOKEN}")],
        [("authorization", f"Bearer {ALICE_TOKEN}"), ("Authorization", "Bearer other")],
        [("authorization", f"Basic {ALICE_TOKEN}")],
        [("authorization", f"Bearer:{ALICE_TOKEN}")],
        [("authorization", f"Bearer{ALICE_TOKEN}")],
        [("authorization", ALICE_TOKEN)],
        [("authorization", "Bearer")],
        [("authorization", "Bearer    ")],
        [("authorization", "")],
        [("authorization", f"Bearer {ALICE_TOKEN} trailing")],
        [("authorization", f"Bearer {ALICE_TOKEN}\tx")],
        [("authorization", f"Bearer {ALICE_TOKEN}é")],
        [("authorization", b"Bearer \xff\xfe" + ALICE_TOKEN.encode())],
        [("authorization", "Bearer " + "a" * 20_000)],
    ],
)
def test_malformed_authorization(auth: Authenticator, metadata: list[tuple[str, Any]]) -> None:
    with pytest.raises(AuthError) as caught:
        auth.from_metadata(metadata, "CN=alice")
    assert caught.value.reason == "MALFORMED_AUTHORIZATION"
    assert ALICE_TOKEN not in str(caught.value)
    assert "a" * 100 not in str(caught.value)


# --------------------------------------------------------------------------
# mTLS and anonymous


def test_mtls_subject_without_a_header(auth: Authenticator) -> None:
    metadata = [("user-agent", "grpc-python"), ("x-request-id", "r1")]
    identity = auth.from_metadata(metadata, "CN=alice,O=Example")
    assert identity == Identity("CN=alice,O=Example", method="mtls")


def test_a_bearer_token_takes_precedence_over_the_certificate(auth: Authenticator) -> None:
    identity = auth.from_metadata(bearer(ALICE_TOKEN), "CN=someone-else")
    assert (identity.subject, identity.method) == ("alice", "token")
    # ... and a bad token is not rescued by the certificate.
    with pytest.raises(AuthError, match="not known"):
        auth.from_metadata(bearer("nope"), "CN=someone-else")


@pytest.mark.parametrize("metadata", [[], [("user-agent", "x")], None])
def test_anonymous(auth: Authenticator, metadata: Any) -> None:
    assert auth.from_metadata(metadata, None) is ANONYMOUS
    assert auth.from_metadata(metadata, "") is ANONYMOUS


# --------------------------------------------------------------------------
# Configuration errors


def test_missing_tokens_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        Authenticator(AuthConfig(tokens_file=path))


def test_unreadable_tokens_file(tmp_path: Path) -> None:
    # A directory stands in for an unreadable file (tests may run as root).
    with pytest.raises(ConfigError, match="cannot read"):
        Authenticator(AuthConfig(tokens_file=tmp_path))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[tokens.alice\n", "not valid TOML"),
        (b"\xff\xfe", "not valid TOML"),
        ('tokens = "x"', "must be a table"),
        ("[users.alice]", "unknown keys"),
        ("[tokens]\nalice = 1", "must be a table"),
        ("[tokens.alice]\ngroups = []", "token_sha256"),
        ('[tokens.alice]\ntoken_sha256 = "abc"', "64 hex digits"),
        ('[tokens.alice]\ntoken_sha256 = ["' + "g" * 64 + '"]', "64 hex digits"),
        ("[tokens.alice]\ntoken_sha256 = []", "token_sha256"),
        ('[tokens.alice]\ntoken_sha256 = "' + "a" * 64 + '"\ngroups = "admins"', "groups"),
        ('[tokens.alice]\ntoken_sha256 = "' + "a" * 64 + '"\ngroup = ["x"]', "unknown keys"),
        ('[tokens.""]\ntoken_sha256 = "' + "a" * 64 + '"', "subject"),
    ],
)
def test_invalid_tokens_file(tmp_path: Path, text: str | bytes, problem: str) -> None:
    path = tmp_path / "tokens.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as caught:
        Authenticator(AuthConfig(tokens_file=path))
    assert str(path) in str(caught.value)


def test_duplicate_hashes_across_subjects(tmp_path: Path) -> None:
    digest = sha256(ALICE_TOKEN)
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[tokens.alice]\ntoken_sha256 = "{digest}"\n'
        f'[tokens.bob]\ntoken_sha256 = ["{"b" * 64}", "{digest.upper()}"]\n'
    )
    with pytest.raises(ConfigError, match="'alice' and 'bob'"):
        Authenticator(AuthConfig(tokens_file=path))


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


INVALID_SETTINGS = [
    ({"jwt_issuer": ISSUER}, "auth", "together"),
    ({"jwks_file": Path("jwks.json")}, "auth", "together"),
    ({"jwt_algorithms": ()}, "auth.jwt_algorithms", "must not be empty"),
    ({"jwt_algorithms": ("RS256", "HS256")}, "auth.jwt_algorithms", "'HS256'"),
    ({"jwt_algorithms": ("none",)}, "auth.jwt_algorithms", "'none'"),
    ({"jwt_leeway": -1.0}, "auth.jwt_leeway", "jwt_leeway"),
    ({"jwt_leeway": math.nan}, "auth.jwt_leeway", "jwt_leeway"),
    ({"jwt_leeway": math.inf}, "auth.jwt_leeway", "jwt_leeway"),
    ({"groups_claim": ""}, "auth.groups_claim", "groups_claim"),
]


@pytest.mark.parametrize(("settings", "key", "problem"), INVALID_SETTINGS)
def test_invalid_settings(settings: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        AuthConfig(**settings)


@pytest.mark.parametrize(("settings", "key", "problem"), INVALID_SETTINGS)
def test_the_config_loader_names_the_invalid_auth_setting(
    settings: dict[str, Any], key: str, problem: str
) -> None:
    overrides = {f"auth.{name}": value for name, value in settings.items()}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides=overrides)
    message = str(caught.value)
    assert re.search(rf"^  {re.escape(key)}: ", message, re.MULTILINE), message
    assert problem in message


# --------------------------------------------------------------------------
# Reload


def test_reload_picks_up_new_tokens_and_keys(
    auth: Authenticator, tokens_file: Path, jwks_file: Path
) -> None:
    tokens_file.write_text(f'[tokens.carol]\ntoken_sha256 = "{sha256("carol-token-xyz")}"\n')
    write_json(jwks_file, {"keys": [public_jwk(OTHER_RSA_KEY, "rsa-2")]})
    assert auth.from_metadata(bearer(ALICE_TOKEN), None).subject == "alice"  # not yet
    auth.reload()
    assert auth.from_metadata(bearer("carol-token-xyz"), None).subject == "carol"
    refused(auth, ALICE_TOKEN, "TOKEN_UNKNOWN")
    assert auth.from_metadata(bearer(mint(OTHER_RSA_KEY, kid="rsa-2")), None).method == "jwt"
    refused(auth, mint(), "TOKEN_INVALID")  # the rotated-out key


def test_a_failed_reload_keeps_the_previous_files(auth: Authenticator, tokens_file: Path) -> None:
    tokens_file.write_text("[tokens.broken\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        auth.reload()
    assert auth.from_metadata(bearer(ALICE_TOKEN), None).subject == "alice"


# --------------------------------------------------------------------------
# Error messages


def test_no_error_message_contains_the_token(make: Callable[..., Authenticator]) -> None:
    auth = make()
    failing = [
        "unknown-token-value-123",
        mint(exp=NOW - 3600),
        mint(nbf=NOW + 3600),
        mint(iss="https://evil.example.org"),
        mint(aud="elsewhere"),
        mint(kid="nope"),
        mint(OTHER_RSA_KEY),
        mint(sub=None),
        forge_hs256(PUBLIC_PEM),
    ]
    for token in failing:
        for metadata in (bearer(token), [("authorization", f"Bearer {token} x")]):
            with pytest.raises(AuthError) as caught:
                auth.from_metadata(metadata, None)
            text = f"{caught.value} {caught.value!r} {caught.value.args}"
            assert token not in text
            for part in token.split("."):
                assert len(part) < 8 or part not in text


# --------------------------------------------------------------------------
# subject_from_auth_context

# What grpcio 1.85 (C core) put in context.auth_context() for the three cases,
# captured from a real aio server (values truncated).
MTLS_CONTEXT = {
    "transport_security_type": [b"ssl"],
    "x509_subject": [b"C=DE,O=Example\\, Inc,CN=alice"],
    "x509_common_name": [b"alice"],
    "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----\nMIIBrDCCAVKgAwIBAgIU..."],
    "x509_subject_alternative_name": [
        b"alice.example.org",
        b"spiffe://example.org/alice",
        b"alice@example.org",
    ],
    "peer_dns": [b"alice.example.org"],
    "peer_uri": [b"spiffe://example.org/alice"],
    "peer_email": [b"alice@example.org"],
    "peer_spiffe_id": [b"spiffe://example.org/alice"],
    "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    "ssl_session_reused": [b"false"],
    "ssl_requested_server_name": [b"localhost"],
    "ssl_tls_version": [b"TLSv1.3"],
}
TLS_WITHOUT_CLIENT_CERT = {
    "transport_security_type": [b"ssl"],
    "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    "ssl_session_reused": [b"false"],
    "ssl_tls_version": [b"TLSv1.3"],
}
INSECURE = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


def test_subject_of_a_verified_client_certificate() -> None:
    assert subject_from_auth_context(MTLS_CONTEXT) == "C=DE,O=Example\\, Inc,CN=alice"


def test_subject_accepts_any_iterable_of_values() -> None:
    context = {key: tuple(values) for key, values in MTLS_CONTEXT.items()}
    assert subject_from_auth_context(context) == "C=DE,O=Example\\, Inc,CN=alice"


@pytest.mark.parametrize(
    "context",
    [
        {},
        INSECURE,
        TLS_WITHOUT_CLIENT_CERT,
        {**INSECURE, "x509_subject": [b"CN=alice"]},
        {**MTLS_CONTEXT, "transport_security_type": [b"alts"]},
        {**MTLS_CONTEXT, "transport_security_type": [b"ssl", b"insecure"]},
        {**MTLS_CONTEXT, "x509_subject": []},
        {**MTLS_CONTEXT, "x509_subject": [b""]},
        {**MTLS_CONTEXT, "x509_subject": [b"CN=a", b"CN=b"]},
        {**MTLS_CONTEXT, "x509_subject": [b"CN=\xff"]},
    ],
    ids=[
        "empty",
        "insecure",
        "tls-no-client-cert",
        "insecure-with-subject",
        "alts",
        "two-types",
        "no-subject-values",
        "empty-subject",
        "two-subjects",
        "not-utf8",
    ],
)
def test_no_subject(context: dict[str, list[bytes]]) -> None:
    assert subject_from_auth_context(context) is None


def test_subject_is_unicode() -> None:
    context = {**MTLS_CONTEXT, "x509_subject": ["CN=Jürgen,O=Sternwarte".encode()]}
    assert subject_from_auth_context(context) == "CN=Jürgen,O=Sternwarte"
