"""Two small readers that the tokens and JWT modules share."""

from __future__ import annotations

from pathlib import Path

from ep_server.errors import ConfigError

__all__ = ["read_file", "string_list"]


def read_file(path: Path, what: str) -> bytes:
    """The bytes of the file ``path``; a ConfigError naming ``what`` and the
    path when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc


def string_list(value: object) -> list[str] | None:
    """``value`` (parsed TOML or JSON) as a list of strings, or None if it is
    not one. A bare string is not a list: it must not become its characters."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None
