"""Static bearer tokens from the tokens file (:mod:`ep_server.auth.tokens`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from auth.helpers import ALICE_TOKEN, ROBOT_NEW, ROBOT_OLD, bearer, refused, sha256

from ep_server.auth import Authenticator
from ep_server.auth.tokens import identity_from_token, load_tokens
from ep_server.config import AuthConfig
from ep_server.errors import ConfigError
from ep_server.model import Identity

# --------------------------------------------------------------------------
# Tokens


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


def test_every_hash_of_the_file_is_loaded_and_found(tokens_file: Path) -> None:
    tokens = load_tokens(tokens_file)
    assert sorted(token.subject for token in tokens) == ["alice", "ci-robot", "ci-robot"]
    robot = identity_from_token(tokens, ROBOT_NEW)
    assert robot == Identity("ci-robot", method="token")
    assert identity_from_token(tokens, "not-a-known-token") is None
    assert identity_from_token((), ALICE_TOKEN) is None


# --------------------------------------------------------------------------
# The tokens file


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
