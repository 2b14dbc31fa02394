"""Who is calling: bearer tokens (static or JWT) and mTLS client certificates.

This package is pure authentication logic: it turns a call's metadata (and,
when the transport verified one, the client certificate's subject) into an
:class:`~ep_server.model.Identity`, or raises :class:`AuthError`. Which RPCs
need an identity, and how an :class:`AuthError` becomes an ``UNAUTHENTICATED``
status, is the server's business.

Resolution of one call, by the :class:`Authenticator`:

* An ``authorization: Bearer <token>`` header (:mod:`~ep_server.auth.credentials`;
  a malformed one is refused as ``MALFORMED_AUTHORIZATION``):

  1. a token whose SHA-256 is in the static tokens file is that entry's
     subject (``method="token"``, :mod:`~ep_server.auth.tokens`);
  2. else, when JWTs are configured and the token has the shape of a JWS
     compact serialisation, it must verify against the JWKS file
     (``method="jwt"``, :mod:`~ep_server.auth.jwts`);
  3. anything else is refused (``TOKEN_UNKNOWN``): a caller who sent
     credentials is never silently treated as anonymous.

* No header: the subject of a verified client certificate, when there is one
  (``method="mtls"``, :mod:`~ep_server.auth.mtls`), else
  :data:`~ep_server.model.ANONYMOUS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ep_server.auth.credentials import AuthError, authorization_values, bearer_token
from ep_server.auth.jwts import Keys, identity_from_jwt, load_jwks, looks_like_jwt
from ep_server.auth.mtls import subject_from_auth_context, subject_from_der_certificate
from ep_server.auth.tokens import StaticToken, identity_from_token, load_tokens
from ep_server.config import ASYMMETRIC_ALGORITHMS, AuthConfig
from ep_server.model import ANONYMOUS, Identity

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthError",
    "Authenticator",
    "authorization_values",
    "subject_from_auth_context",
    "subject_from_der_certificate",
]


@dataclass(frozen=True, slots=True)
class _Files:
    """Everything read from the tokens and JWKS files; replaced as a whole
    by :meth:`Authenticator.reload`."""

    tokens: tuple[StaticToken, ...] = ()
    keys: Keys = field(default_factory=dict)


def _read_files(config: AuthConfig) -> _Files:
    tokens = load_tokens(config.tokens_file) if config.tokens_file else ()
    keys = load_jwks(config.jwks_file) if config.jwks_file else {}
    return _Files(tokens, keys)


class Authenticator:
    """Turns a call's credentials into an :class:`~ep_server.model.Identity`.

    The files are read once, here and on :meth:`reload`; a call costs a hash,
    or a signature verification, and no I/O. Safe to share between tasks and
    threads: a reload replaces the loaded files in one assignment.
    """

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.time) -> None:
        """Read the files ``config`` names.

        :param config: the validated ``[auth]`` section.
        :param clock: the time a JWT's ``exp``, ``nbf`` and ``iat`` are
            checked against.
        :raises ConfigError: a tokens or JWKS file cannot be read or is malformed.
        """
        self._config = config
        self._clock = clock
        self._files = _read_files(config)

    @property
    def config(self) -> AuthConfig:
        """The ``[auth]`` section this authenticator was made with."""
        return self._config

    def reload(self) -> None:
        """Re-read the tokens and JWKS files (for SIGHUP).

        On a ConfigError the previous files stay in force.
        """
        self._files = _read_files(self._config)

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
        token = bearer_token(metadata)
        if token is None:
            if peer_subject:
                return Identity(subject=peer_subject, method="mtls")
            return ANONYMOUS
        files = self._files
        identity = identity_from_token(files.tokens, token)
        if identity is not None:
            return identity
        if self._config.jwks_file is not None and looks_like_jwt(token):
            return identity_from_jwt(token, files.keys, self._config, self._clock)
        raise AuthError("TOKEN_UNKNOWN", "the bearer token is not known here")
