"""Keys, tokens and metadata for the authentication tests.

Keys are made at run time and every token is minted here. Token times are
relative to a fake clock set years away from the real one, so a test passes
only if that clock, not the system's, drives the exp/nbf/iat checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ep_server.auth import Authenticator, AuthError

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


def refused(auth: Authenticator, token: str, reason: str) -> AuthError:
    """Assert the token is refused with ``reason``, and never echoed."""
    with pytest.raises(AuthError) as caught:
        auth.from_metadata(bearer(token), None)
    error = caught.value
    assert error.reason == reason, error.message
    assert token not in str(error)
    assert token not in repr(error)
    return error


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
