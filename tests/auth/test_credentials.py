"""Reading the bearer token from a call's metadata (:mod:`ep_server.auth.credentials`)."""

from __future__ import annotations

from typing import Any

import pytest
from auth.helpers import ALICE_TOKEN, bearer

from ep_server.auth import Authenticator, AuthError
from ep_server.auth.credentials import MAX_TOKEN_LENGTH, authorization_values, bearer_token


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


def test_authorization_values_are_found_by_name_in_any_case() -> None:
    metadata = [("Authorization", "a"), ("user-agent", "x"), ("AUTHORIZATION", b"b")]
    assert authorization_values(metadata) == ["a", b"b"]
    assert authorization_values(None) == []


@pytest.mark.parametrize("metadata", [None, [], [("user-agent", "x")]])
def test_a_call_without_an_authorization_header_has_no_bearer_token(metadata: Any) -> None:
    assert bearer_token(metadata) is None


def test_the_longest_bearer_token_accepted() -> None:
    longest = "a" * MAX_TOKEN_LENGTH
    assert bearer_token([("authorization", f"Bearer {longest}")]) == longest
    with pytest.raises(AuthError) as caught:
        bearer_token([("authorization", f"Bearer {longest}a")])
    assert caught.value.reason == "MALFORMED_AUTHORIZATION"
