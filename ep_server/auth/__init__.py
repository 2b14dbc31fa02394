"""Who is calling: bearer tokens (static or JWT) and mTLS client certificates.

This module is pure authentication logic: it turns a call's metadata (and,
when the transport verified one, the client certificate's subject) into an
:class:`~ep_server.model.Identity`, or raises :class:`AuthError`. Which RPCs
need an identity, and how an :class:`AuthError` becomes an ``UNAUTHENTICATED``
status, is the server's business.

Resolution of one call:

* An ``authorization: Bearer <token>`` header (name and scheme in any case):

  1. a token whose SHA-256 is in the static tokens file is that entry's
     subject (``method="token"``);
  2. else, when JWTs are configured and the token has the shape of a JWS
     compact serialisation, it must verify against the JWKS file
     (``method="jwt"``);
  3. anything else is refused (``TOKEN_UNKNOWN``): a caller who sent
     credentials is never silently treated as anonymous.

* No header: the subject of a verified client certificate, when there is one
  (``method="mtls"``, see :func:`subject_from_auth_context`), else
  :data:`~ep_server.model.ANONYMOUS`.

Static tokens file (TOML); it stores hashes, never tokens::

    [tokens.alice]                       # the identity's subject
    token_sha256 = "<64 hex digits>"     # or a list of them (token rotation)
    groups = ["astro", "admins"]         # optional

    [tokens."ci-robot"]
    token_sha256 = ["<old token's hash>", "<new token's hash>"]

Tokens must be long and random, since the hash is not salted; make one with
``python -c 'import secrets; print(secrets.token_urlsafe(32))'`` and hash it
with ``printf %s "$TOKEN" | sha256sum``. Every hash may appear only once in the
file.

JWTs: ``jwks_file`` is a standard JSON Web Key Set (``{"keys": [...]}``) with
the issuer's *public* keys. A token's ``kid`` header selects the key; a token
without ``kid`` is accepted only when the set holds exactly one key. The
header's ``alg`` must be in ``jwt_algorithms`` (asymmetric algorithms only)
and match the key's algorithm (the JWK's ``alg``, or the one implied by its
type and curve). ``exp``, ``iss`` and ``sub`` are required; ``aud`` is checked
when ``jwt_audience`` is set. ``exp``, ``nbf`` and ``iat`` are checked against
the :class:`Authenticator`'s clock, allowing ``jwt_leeway`` seconds of skew.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from ep_server.config import ASYMMETRIC_ALGORITHMS, AuthConfig
from ep_server.errors import ConfigError
from ep_server.model import ANONYMOUS, Identity

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthError",
    "Authenticator",
    "authorization_values",
    "subject_from_auth_context",
]

#: Longer tokens are refused before any work is done on them (gRPC's own
#: metadata limit is about this size anyway).
MAX_TOKEN_LENGTH = 16 * 1024

#: RSA keys shorter than this are refused (NIST SP 800-131A).
MIN_RSA_BITS = 2048

#: JWK members that only a private (or symmetric) key has.
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: Visible ASCII, no spaces: what a bearer token may consist of.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
#: JWS compact serialisation: three base64url segments (the last may be empty).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class AuthError(Exception):
    """The caller's credentials are refused.

    ``message`` is safe to send back to the caller: it never contains the
    token (nor any claim value). ``reason`` is the ``ErrorInfo`` reason, one of
    ``MALFORMED_AUTHORIZATION``, ``TOKEN_UNKNOWN``, ``TOKEN_INVALID``,
    ``TOKEN_EXPIRED``, ``TOKEN_NOT_YET_VALID``, ``WRONG_ISSUER`` and
    ``WRONG_AUDIENCE``.
    """

    #: The status the server should answer with.
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _malformed(message: str) -> AuthError:
    return AuthError("MALFORMED_AUTHORIZATION", message)


def _invalid(message: str) -> AuthError:
    return AuthError("TOKEN_INVALID", message)


# --------------------------------------------------------------------------
# Loading the files


@dataclass(frozen=True, slots=True)
class _StaticToken:
    digest: bytes
    subject: str
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class _State:
    """Everything read from the files; replaced as a whole by ``reload``."""

    tokens: tuple[_StaticToken, ...] = ()
    keys: Mapping[str | None, jwt.PyJWK] = field(default_factory=dict)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc


def _str_list(value: object) -> list[str] | None:
    """``value`` as a list of strings, or None if it is not one."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _parse_token_entry(path: Path, subject: str, entry: object) -> list[_StaticToken]:
    where = f"tokens file {path}: [tokens.{subject}]"
    if not subject.strip():
        raise ConfigError(f"tokens file {path}: a subject must not be empty")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(entry) - {"token_sha256", "groups"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    raw = entry.get("token_sha256")
    hashes = [raw] if isinstance(raw, str) else _str_list(raw)
    if not hashes:
        raise ConfigError(f"{where}: token_sha256 must be a hex SHA-256 or a list of them")
    if not all(_HEX_SHA256.fullmatch(h) for h in hashes):
        raise ConfigError(f"{where}: token_sha256 must be 64 hex digits (a SHA-256)")
    groups = _str_list(entry.get("groups", []))
    if groups is None:
        raise ConfigError(f"{where}: groups must be a list of strings")
    return [_StaticToken(bytes.fromhex(h), subject, frozenset(groups)) for h in hashes]


def _load_tokens(path: Path) -> tuple[_StaticToken, ...]:
    try:
        document = tomllib.loads(_read(path, "tokens file").decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"tokens file {path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"tokens"})
    if unknown:
        raise ConfigError(f"tokens file {path}: unknown keys {unknown}; expected [tokens.NAME]")
    table = document.get("tokens", {})
    if not isinstance(table, dict):
        raise ConfigError(f"tokens file {path}: tokens must be a table of [tokens.NAME]")
    owners: dict[bytes, str] = {}
    tokens: list[_StaticToken] = []
    for subject, entry in table.items():
        for token in _parse_token_entry(path, subject, entry):
            if token.digest in owners:
                raise ConfigError(
                    f"tokens file {path}: the same token_sha256 is listed for "
                    f"{owners[token.digest]!r} and {subject!r}"
                )
            owners[token.digest] = subject
            tokens.append(token)
    return tuple(tokens)


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


def _load_jwks(path: Path) -> dict[str | None, jwt.PyJWK]:
    try:
        document = json.loads(_read(path, "JWKS file"))
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


def _load_state(config: AuthConfig) -> _State:
    tokens = _load_tokens(config.tokens_file) if config.tokens_file else ()
    keys = _load_jwks(config.jwks_file) if config.jwks_file else {}
    return _State(tokens, keys)


# --------------------------------------------------------------------------
# Reading the metadata


def authorization_values(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> list[str | bytes]:
    """The credentials a call carries: its ``authorization`` values (any case)."""
    return [value for key, value in metadata or () if key.lower() == "authorization"]


def _bearer_token(value: str | bytes) -> str:
    """The token of an ``authorization`` header value, or AuthError."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("the authorization header is not ASCII") from None
    scheme, _, token = value.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        raise _malformed("the authorization header must use the Bearer scheme")
    token = token.strip(" ")
    if not token:
        raise _malformed("the bearer token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed("the bearer token is too long")
    if not _TOKEN_CHARS.fullmatch(token):
        raise _malformed("the bearer token contains characters a token cannot have")
    return token


# --------------------------------------------------------------------------
# JWT checks


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

    PyJWT reads the system clock itself and cannot be given another, so the
    Authenticator decodes with its time checks off and makes them here; the
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


# --------------------------------------------------------------------------
# The authenticator


class Authenticator:
    """Turns a call's credentials into an :class:`~ep_server.model.Identity`.

    The files are read once, here and on :meth:`reload`; a call costs a hash,
    or a signature verification, and no I/O. Safe to share between tasks and
    threads: a reload replaces the loaded state in one assignment.
    """

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.time) -> None:
        """Read the files ``config`` names.

        :param config: the validated ``[auth]`` section.
        :param clock: the time ``exp``, ``nbf`` and ``iat`` are checked against.
        :raises ConfigError: a tokens or JWKS file cannot be read or is malformed.
        """
        self._config = config
        self._clock = clock
        self._state = _load_state(config)

    @property
    def config(self) -> AuthConfig:
        """The ``[auth]`` section this authenticator was made with."""
        return self._config

    def reload(self) -> None:
        """Re-read the tokens and JWKS files (for SIGHUP).

        On a ConfigError the previous files stay in force.
        """
        self._state = _load_state(self._config)

    def from_metadata(
        self,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        peer_subject: str | None,
    ) -> Identity:
        """The caller's identity, from its metadata and verified certificate.

        :param metadata: the call's invocation metadata (None is taken as none).
        :param peer_subject: the subject of the client certificate the
            transport verified, from :func:`subject_from_auth_context`.
        :raises AuthError: the caller sent credentials that are refused.
        """
        values = authorization_values(metadata)
        if len(values) > 1:
            raise _malformed("more than one authorization header")
        if not values:
            if peer_subject:
                return Identity(subject=peer_subject, method="mtls")
            return ANONYMOUS
        return self._from_token(_bearer_token(values[0]))

    def _from_token(self, token: str) -> Identity:
        state = self._state
        static = self._static_token(state, token)
        if static is not None:
            return Identity(subject=static.subject, method="token", groups=static.groups)
        if self._config.jwks_file is not None and _JWT_SHAPE.fullmatch(token):
            return self._from_jwt(state, token)
        raise AuthError("TOKEN_UNKNOWN", "the bearer token is not known here")

    @staticmethod
    def _static_token(state: _State, token: str) -> _StaticToken | None:
        """The static entry the token belongs to, comparing every hash in
        constant time (no early exit)."""
        digest = hashlib.sha256(token.encode("ascii")).digest()
        found = None
        for entry in state.tokens:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    def _from_jwt(self, state: _State, token: str) -> Identity:
        key = self._select_key(state, token)
        claims = self._decode(key, token)
        _check_times(claims, self._clock(), self._config.jwt_leeway)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise _invalid("the token's sub claim is empty")
        return Identity(
            subject=subject,
            method="jwt",
            groups=self._groups(claims),
            claims=claims,
        )

    def _select_key(self, state: _State, token: str) -> jwt.PyJWK:
        """The JWKS key the token names (or the only key), checked against
        the token's ``alg``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._config.jwt_algorithms:
            raise _invalid("the token's signature algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _invalid("the token's kid header is not a string")
        if kid is None and len(state.keys) == 1:
            [key] = state.keys.values()
        else:
            found = state.keys.get(kid) if kid is not None else None
            if found is None:
                raise _invalid("the token's signing key is not known here")
            key = found
        # Never let the header choose how a key is used: the algorithm must be
        # the key's own (PyJWT >= 2.10 checks this too; older versions do not).
        if alg != key.algorithm_name:
            raise _invalid("the token's algorithm does not match its signing key")
        return key

    def _decode(self, key: jwt.PyJWK, token: str) -> dict[str, Any]:
        """Verify the signature, ``iss``, ``aud`` and the required claims."""
        config = self._config
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
            reason = {"iss": "WRONG_ISSUER", "aud": "WRONG_AUDIENCE"}.get(
                exc.claim, "TOKEN_INVALID"
            )
            raise AuthError(reason, f"the token has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise _invalid("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise _invalid("the token is not a valid JWT") from None
        return claims

    def _groups(self, claims: Mapping[str, Any]) -> frozenset[str]:
        name = self._config.groups_claim
        value = claims.get(name)
        if value is None:
            return frozenset()
        groups = _str_list(value)
        if groups is None:
            raise _invalid(f"the token's {name} claim is not a list of strings")
        return frozenset(groups)


# --------------------------------------------------------------------------
# mTLS


def _single(auth_context: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    values = list(auth_context.get(key) or ())
    return values[0] if len(values) == 1 else None


def subject_from_auth_context(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The verified client certificate's subject DN, from ``context.auth_context()``.

    gRPC (C core) fills the auth context of a TLS connection with
    ``transport_security_type = [b"ssl"]`` and, only when the client presented
    a certificate that verified against the server's client CA,
    ``x509_subject`` (the subject DN in RFC 2253 form, most significant RDN
    last, for example ``b"CN=alice,O=Example\\\\, Inc,C=DE"``),
    ``x509_common_name``, ``x509_pem_cert``, ``x509_subject_alternative_name``
    and ``peer_dns``/``peer_uri``/``peer_email``/``peer_spiffe_id``. Python's
    ``ssl_server_credentials`` either requires and verifies a client
    certificate or does not ask for one, so an ``x509_subject`` there was
    verified. Insecure connections say ``transport_security_type = [b"insecure"]``.

    Returns None unless the connection is TLS and exactly one non-empty,
    UTF-8 subject is present (anything else is not an identity to trust).
    """
    if _single(auth_context, "transport_security_type") != b"ssl":
        return None
    raw = _single(auth_context, "x509_subject")
    if not raw:
        return None
    try:
        subject = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return subject if subject.strip() else None
