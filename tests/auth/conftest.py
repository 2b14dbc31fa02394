"""Fixtures for the authentication tests: the tokens and JWKS files, the
fake clock, and Authenticators built from an ``[auth]`` section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from auth.helpers import (
    ALICE_TOKEN,
    AUDIENCE,
    EC_KEY,
    ED_KEY,
    ISSUER,
    ROBOT_NEW,
    ROBOT_OLD,
    RSA_KEY,
    Clock,
    public_jwk,
    sha256,
    write_json,
)

from ep_server.auth import Authenticator
from ep_server.config import AuthConfig


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
        config: dict[str, Any] = {
            "tokens_file": tokens_file,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwks_file": jwks_file,
        }
        config.update(overrides)
        return Authenticator(AuthConfig(**config), clock=clock)

    return build


@pytest.fixture
def auth(make: Callable[..., Authenticator]) -> Authenticator:
    return make()
