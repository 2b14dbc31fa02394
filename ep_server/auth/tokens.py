"""Static bearer tokens: a TOML file of their SHA-256 hashes (``[auth].tokens_file``).

The file stores hashes, never tokens::

    [tokens.alice]                       # the identity's subject
    token_sha256 = "<64 hex digits>"     # or a list of them (token rotation)
    groups = ["astro", "admins"]         # optional

    [tokens."ci-robot"]
    token_sha256 = ["<old token's hash>", "<new token's hash>"]

Tokens must be long and random, since the hash is not salted; make one with
``python -c 'import secrets; print(secrets.token_urlsafe(32))'`` and hash it
with ``printf %s "$TOKEN" | sha256sum``. Every hash may appear only once in the
file.

A token whose hash is listed is that entry's subject (``method="token"``).
The lookup compares the token's SHA-256 with every listed hash, each in
constant time, and does not stop at a match.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ep_server.auth._read import read_file, string_list
from ep_server.errors import ConfigError
from ep_server.model import Identity

__all__ = ["StaticToken", "identity_from_token", "load_tokens"]

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class StaticToken:
    """One hash of the tokens file, and whose it is."""

    digest: bytes
    subject: str
    groups: frozenset[str]


def load_tokens(path: Path) -> tuple[StaticToken, ...]:
    """Every hash the tokens file lists.

    :raises ConfigError: naming the file, when it cannot be read, is not
        valid TOML, or is not in the format above.
    """
    try:
        document = tomllib.loads(read_file(path, "tokens file").decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"tokens file {path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"tokens"})
    if unknown:
        raise ConfigError(f"tokens file {path}: unknown keys {unknown}; expected [tokens.NAME]")
    table = document.get("tokens", {})
    if not isinstance(table, dict):
        raise ConfigError(f"tokens file {path}: tokens must be a table of [tokens.NAME]")
    owners: dict[bytes, str] = {}
    tokens: list[StaticToken] = []
    for subject, entry in table.items():
        for token in _parse_entry(path, subject, entry):
            if token.digest in owners:
                raise ConfigError(
                    f"tokens file {path}: the same token_sha256 is listed for "
                    f"{owners[token.digest]!r} and {subject!r}"
                )
            owners[token.digest] = subject
            tokens.append(token)
    return tuple(tokens)


def _parse_entry(path: Path, subject: str, entry: object) -> list[StaticToken]:
    where = f"tokens file {path}: [tokens.{subject}]"
    if not subject.strip():
        raise ConfigError(f"tokens file {path}: a subject must not be empty")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(entry) - {"token_sha256", "groups"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    raw = entry.get("token_sha256")
    hashes = [raw] if isinstance(raw, str) else string_list(raw)
    if not hashes:
        raise ConfigError(f"{where}: token_sha256 must be a hex SHA-256 or a list of them")
    if not all(_HEX_SHA256.fullmatch(h) for h in hashes):
        raise ConfigError(f"{where}: token_sha256 must be 64 hex digits (a SHA-256)")
    groups = string_list(entry.get("groups", []))
    if groups is None:
        raise ConfigError(f"{where}: groups must be a list of strings")
    return [StaticToken(bytes.fromhex(h), subject, frozenset(groups)) for h in hashes]


def identity_from_token(tokens: tuple[StaticToken, ...], token: str) -> Identity | None:
    """The identity whose hash the token has; None when no hash matches.

    Every hash is compared, in constant time and with no early exit.
    """
    digest = hashlib.sha256(token.encode("ascii")).digest()
    found = None
    for entry in tokens:
        if hmac.compare_digest(entry.digest, digest):
            found = entry
    if found is None:
        return None
    return Identity(subject=found.subject, method="token", groups=found.groups)
