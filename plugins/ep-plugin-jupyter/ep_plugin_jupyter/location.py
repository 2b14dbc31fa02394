"""Where the notebook is: an http(s) URL, or a file under a notebook root.

The taskinfo names the notebook in one of three ways, looked for in this
order:

* ``{"notebook": "https://example.org/nb.ipynb"}``, the plain, seed-like form;
* ``{"notebook": {"location": "..."}}``, ExecutionBroker-style;
* ``{"location": "..."}``.

A location is accepted when it is an ``http``/``https`` URL with a host (and
the site allows URLs), or an absolute path (or ``file://`` URL) that, with
every symlink and ``..`` resolved, lies under one of the configured notebook
roots and is an existing file. The decision reads the filesystem, so call it
from a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ep_plugin_jupyter import reasons as R
from ep_server import Reason

__all__ = ["LocationRules", "check_location", "find_location"]

_HINT = "an http(s) URL or an absolute path under a notebook root"


@dataclass(frozen=True, slots=True)
class LocationRules:
    """What the site accepts: its notebook roots (already resolved) and
    whether remote notebooks are allowed."""

    roots: tuple[Path, ...] = ()
    allow_urls: bool = True

    @classmethod
    def from_settings(cls, roots: Sequence[str], allow_urls: bool) -> LocationRules:
        """Resolve the configured roots once, so a root may itself be a symlink."""
        return cls(tuple(Path(root).resolve() for root in roots), allow_urls)


def find_location(taskinfo: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The field that names the notebook and its raw value, or ``None``."""
    notebook = taskinfo.get("notebook")
    if isinstance(notebook, Mapping):
        return "taskinfo.notebook.location", notebook.get("location")
    if "notebook" in taskinfo:
        return "taskinfo.notebook", notebook
    if "location" in taskinfo:
        return "taskinfo.location", taskinfo["location"]
    return None


def check_location(taskinfo: Mapping[str, Any], rules: LocationRules) -> Reason | None:
    """Why the taskinfo's notebook location is unacceptable, or ``None``."""
    found = find_location(taskinfo)
    if found is None:
        return R.reason(
            R.NOTEBOOK_MISSING, "taskinfo.notebook", f"taskinfo names no notebook; give {_HINT}"
        )
    field, value = found
    if not isinstance(value, str) or not value.strip():
        return _invalid(field, f"the notebook location must be a string: {_HINT}")
    try:
        return _check_text(field, value, rules)
    except ValueError as exc:  # a malformed URL, a NUL byte in a path
        return _invalid(field, f"the notebook location is malformed ({exc}): {_HINT}")


def _check_text(field: str, value: str, rules: LocationRules) -> Reason | None:
    parts = urlsplit(value)
    if parts.scheme in ("http", "https"):
        return _check_url(field, parts.hostname, rules)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return _check_path(field, unquote(parts.path), rules)
    if parts.scheme:
        return _invalid(field, f"the URL scheme {parts.scheme!r} is not supported: {_HINT}")
    return _check_path(field, value, rules)


def _check_url(field: str, hostname: str | None, rules: LocationRules) -> Reason | None:
    if not hostname:
        return _invalid(field, "the notebook URL has no host")
    if not rules.allow_urls:
        message = "this site runs only local notebooks, not ones given by URL"
        return R.reason(R.NOTEBOOK_URL_REFUSED, field, message)
    return None


def _check_path(field: str, text: str, rules: LocationRules) -> Reason | None:
    path = Path(text)
    if not path.is_absolute():
        return _invalid(field, f"the notebook path {text!r} is relative: {_HINT}")
    if not rules.roots:
        return R.reason(R.NOTEBOOK_OUTSIDE_ROOTS, field, "this site runs no local notebooks")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return R.reason(R.NOTEBOOK_NOT_FOUND, field, f"the notebook path {text!r} does not resolve")
    if not any(resolved.is_relative_to(root) for root in rules.roots):
        roots = ", ".join(str(root) for root in rules.roots)
        message = f"the notebook path {text!r} is not under a notebook root ({roots})"
        return R.reason(R.NOTEBOOK_OUTSIDE_ROOTS, field, message)
    if not _is_file(resolved):
        return R.reason(R.NOTEBOOK_NOT_FOUND, field, f"no notebook file at {text!r}")
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a directory on the way that this process may not read
        return False


def _invalid(field: str, message: str) -> Reason:
    return R.reason(R.INVALID_NOTEBOOK_LOCATION, field, message)
