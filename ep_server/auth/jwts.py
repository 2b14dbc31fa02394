"""JWTs: bearer tokens signed by an issuer whose public keys are in a JWKS file.

``[auth].jwks_file`` is a standard JSON Web Key Set (``{"keys": [...]}``) with
the issuer's *public* keys: private or symmetric keys, RSA keys under
:data:`MIN_RSA_BITS` bits and keys of an algorithm outside
:data:`~ep_server.config.ASYMMETRIC_ALGORITHMS` make the file unusable;
encryption keys (``"use": "enc"``) are skipped.

A token is accepted (``method="jwt"``) when:

* its ``kid`` header selects a key of the set; a token without ``kid`` is
  accepted only when the set holds exactly one key;
* the header's ``alg`` is in ``jwt_algorithms`` (asymmetric algorithms only)
  and is the key's algorithm (the JWK's ``alg``, or the one implied by its
  type and curve);
* the signature verifies;
* ``exp``, ``iss`` and ``sub`` are present, ``iss`` is ``jwt_issuer`` and
  ``sub`` is not blank; ``aud`` is checked when ``jwt_audience`` is set;
* ``exp``, ``nbf`` and ``iat`` are finite numbers, checked against the
  :class:`~ep_server.auth.Authenticator`'s clock, allowing ``jwt_leeway``
  seconds of skew;
* the ``groups_claim`` claim, when present, is a list of strings (the
  identity's groups).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from ep_server.auth._read import read_file, string_list
from ep_server.auth.credentials import AuthError
from ep_server.config import ASYMMETRIC_ALGORITHMS, AuthConfig
from ep_server.errors import ConfigError
from ep_server.model import Identity

__all__ = ["MIN_RSA_BITS", "Keys", "identity_from_jwt", "load_jwks", "looks_like_jwt"]

#: RSA keys shorter than this are refused (NIST SP 800-131A).
MIN_RSA_BITS = 2048

#: The verification keys of a JWKS file, by ``kid`` (None for a key without one).
Keys = Mapping[str | None, jwt.PyJWK]

#: JWK members that only a private (or symmetric) key has.
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

#: JWS compact serialisation: three base64url segments (the last may be empty).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _invalid(message: str) -> AuthError:
    return AuthError("TOKEN_INVALID", message)


# --------------------------------------------------------------------------
# The key set


def load_jwks(path: Path) -> dict[str | None, jwt.PyJWK]:
    """The signature verification keys of the JWKS file.

    :raises ConfigError: naming the file, when it cannot be read, is not a
        key set, holds a key that is refused (see above), or no usable key.
    """
    try:
        document = json.loads(read_file(path, "JWKS file"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"JWKS file {path}: not valid JSON: {exc}") from exc
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise ConfigError(f'JWKS file {path}: expected a JSON Web Key Set {{"keys": [...]}}')
    keys: dict[str | None, jwt.PyJWK] = {}
    for index, data in enumerate(members):
        key = _load_jwk(path, index, data)
        if key is None:
            continue
        if key.key_id in keys:
            raise ConfigError(f"JWKS file {path}: two keys have kid {key.key_id!r}")
        keys[key.key_id] = key
    if not keys:
        raise ConfigError(f"JWKS file {path}: no signature verification keys")
    return keys


def _load_jwk(path: Path, index: int, data: object) -> jwt.PyJWK | None:
    """One member of the key set as a verification key; None to skip it."""
    where = f"JWKS file {path}: keys[{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} is not a JSON object")
    if data.get("use") == "enc":
        return None  # an encryption key: never used to verify signatures
    if data.get("kty") == "oct":
        raise ConfigError(f"{where}: symmetric (oct) keys are not accepted")
    if _PRIVATE_JWK_MEMBERS & set(data):
        raise ConfigError(f"{where}: holds private key material; publish public keys only")
    kid = data.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ConfigError(f"{where}: kid must be a string")
    try:
        key = jwt.PyJWK(data)
    except jwt.PyJWTError as exc:
        raise ConfigError(f"{where}: not a usable key: {str(exc)[:200]}") from exc
    if key.algorithm_name not in ASYMMETRIC_ALGORITHMS:
        raise ConfigError(f"{where}: algorithm {key.algorithm_name!r} is not accepted")
    if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        raise ConfigError(f"{where}: RSA keys need at least {MIN_RSA_BITS} bits")
    return key


# --------------------------------------------------------------------------
# A token


def looks_like_jwt(token: str) -> bool:
    """True when the token has the shape of a JWS compact serialisation."""
    return _JWT_SHAPE.fullmatch(token) is not None


def identity_from_jwt(
    token: str, keys: Keys, config: AuthConfig, clock: Callable[[], float]
) -> Identity:
    """The identity a JWT proves, checked by the rules above.

    :param keys: the JWKS file's keys, from :func:`load_jwks`.
    :param config: the ``[auth]`` section: issuer, audience, algorithms,
        leeway and the groups claim.
    :param clock: the time ``exp``, ``nbf`` and ``iat`` are checked against.
    :raises AuthError: the token is refused; the message never contains it.
    """
    key = _select_key(token, keys, config.jwt_algorithms)
    claims = _decode(token, key, config)
    _check_times(claims, clock(), config.jwt_leeway)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise _invalid("the token's sub claim is empty")
    return Identity(
        subject=subject,
        method="jwt",
        groups=_groups(claims, config.groups_claim),
        claims=claims,
    )


def _select_key(token: str, keys: Keys, algorithms: list[str]) -> jwt.PyJWK:
    """The JWKS key the token names (or the only key), checked against
    the token's ``alg``."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid("the token is not a well-formed JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise _invalid("the token's signature algorithm is not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _invalid("the token's kid header is not a string")
    if kid is None and len(keys) == 1:
        [key] = keys.values()
    else:
        found = keys.get(kid) if kid is not None else None
        if found is None:
            raise _invalid("the token's signing key is not known here")
        key = found
    # Never let the header choose how a key is used: the algorithm must be
    # the key's own (PyJWT >= 2.10 checks this too; older versions do not).
    if alg != key.algorithm_name:
        raise _invalid("the token's algorithm does not match its signing key")
    return key


def _decode(token: str, key: jwt.PyJWK, config: AuthConfig) -> dict[str, Any]:
    """Verify the signature, ``iss``, ``aud`` and the required claims."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(config.jwt_algorithms),
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            options={
                "verify_signature": True,
                "verify_iss": True,
                "verify_sub": True,
                "require": ["exp", "iss", "sub"],
                # Without a configured audience, aud is not looked at.
                "verify_aud": config.jwt_audience is not None,
                # PyJWT reads the system clock; _check_times uses ours.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidIssuerError:
        raise AuthError("WRONG_ISSUER", "the token's issuer is not accepted here") from None
    except jwt.InvalidAudienceError:
        raise AuthError("WRONG_AUDIENCE", "the token is not meant for this service") from None
    except jwt.MissingRequiredClaimError as exc:
        reason = {"iss": "WRONG_ISSUER", "aud": "WRONG_AUDIENCE"}.get(exc.claim, "TOKEN_INVALID")
        raise AuthError(reason, f"the token has no {exc.claim} claim") from None
    except jwt.InvalidSignatureError:
        raise _invalid("the token's signature does not verify") from None
    except jwt.PyJWTError:
        raise _invalid("the token is not a valid JWT") from None
    return claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim, or None if absent; AuthError if not a finite number.

    JSON allows NaN and Infinity in Python's parser: an ``exp`` of NaN would
    pass every comparison, so non-finite values are refused outright.
    """
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"the token's {name} claim is not a number")
    # A huge int (exp = 10**400) cannot become a float: refuse it too.
    if isinstance(value, int) and abs(value) > 2**53:
        raise _invalid(f"the token's {name} claim is out of range")
    if not math.isfinite(value):
        raise _invalid(f"the token's {name} claim is not a finite number")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """Check exp, nbf and iat against ``now`` (the injected clock).

    PyJWT reads the system clock itself and cannot be given another, so
    :func:`_decode` turns its time checks off and they are made here; the
    comparisons follow PyJWT's (expired when ``exp <= now - leeway``).
    """
    exp = _number(claims, "exp")
    if exp is None:  # PyJWT's "require" already insists; never rely on it alone
        raise _invalid("the token has no exp claim")
    if exp <= now - leeway:
        raise AuthError("TOKEN_EXPIRED", "the token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise AuthError("TOKEN_NOT_YET_VALID", "the token is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise AuthError("TOKEN_NOT_YET_VALID", "the token was issued in the future (iat)")


def _groups(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    """The caller's groups, from the claim ``name`` (none when it is absent)."""
    value = claims.get(name)
    if value is None:
        return frozenset()
    groups = string_list(value)
    if groups is None:
        raise _invalid(f"the token's {name} claim is not a list of strings")
    return frozenset(groups)
