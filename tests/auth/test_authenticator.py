"""The Authenticator (:mod:`ep_server.auth`): the order in which one call's
credentials are resolved, the ``[auth]`` section it is built from, reloading
its files, and what its refusals say.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from auth.helpers import (
    ALICE_TOKEN,
    ISSUER,
    NOW,
    OTHER_RSA_KEY,
    PUBLIC_PEM,
    bearer,
    forge_hs256,
    mint,
    public_jwk,
    refused,
    sha256,
    write_json,
)
from pydantic import ValidationError

from ep_server.auth import Authenticator, AuthError
from ep_server.config import AuthConfig, load_settings
from ep_server.errors import ConfigError
from ep_server.model import ANONYMOUS, Identity

# --------------------------------------------------------------------------
# Resolution order


def test_static_tokens_without_jwt(tokens_file: Path) -> None:
    auth = Authenticator(AuthConfig(tokens_file=tokens_file))
    assert auth.from_metadata(bearer(ALICE_TOKEN), None).subject == "alice"
    # JWT-shaped, but JWTs are not configured: just an unknown token.
    refused(auth, mint(), "TOKEN_UNKNOWN")


def test_a_bearer_token_with_nothing_configured_is_refused_not_ignored() -> None:
    refused(Authenticator(AuthConfig()), ALICE_TOKEN, "TOKEN_UNKNOWN")


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
# The [auth] section


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


def test_the_authenticator_keeps_the_section_it_was_built_from(tokens_file: Path) -> None:
    config = AuthConfig(tokens_file=tokens_file)
    assert Authenticator(config).config is config


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
