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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ep_plugin_jupyter import reasons as R
from ep_plugin_jupyter.values import is_object
from ep_server import Reason

__all__ = ["LocationRules", "check_location", "find_location", "url_scheme"]

_HINT = "an http(s) URL or an absolute path under a notebook root"

#: What may not be in an http(s) URL's user, host or port for ``urlsplit``
#: to take them as they are: a delimiter, a bracket, a tab or line break,
#: or a character outside ASCII.
_NOT_NETLOC = r"/?#@\[\]\t\n\r\x80-\U0010ffff"
#: An http(s) URL that ``urlsplit`` takes apart without an error and whose
#: ``hostname`` is not empty: ``[user@]host[:port]`` with no brackets, and
#: no tab or line break anywhere (``urlsplit`` would remove them first).
#: Any other text is left to ``urlsplit`` itself.
_WEB_URL = re.compile(
    rf"[hH][tT][tT][pP][sS]?://(?:[^{_NOT_NETLOC}]*@)?[^:{_NOT_NETLOC}]+(?::[^{_NOT_NETLOC}]*)?"
    r"(?:[/?#][^\t\n\r]*)?"
)
#: What ``urlsplit`` strips from the start of a URL, and the ``/`` that
#: starts a ``//netloc``: a text starting otherwise, with no ``:``, has no
#: scheme and no netloc.
_NOT_PLAIN_START = frozenset("".join(chr(i) for i in range(0x21)) + "/")


@dataclass(frozen=True, slots=True)
class LocationRules:
    """What the site accepts: its notebook roots (already resolved) and
    whether remote notebooks are allowed; ``roots_text`` is the roots as a
    refusal names them, derived when the rules are made."""

    roots: tuple[Path, ...] = ()
    allow_urls: bool = True
    roots_text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots_text", ", ".join(str(root) for root in self.roots))

    @classmethod
    def from_settings(cls, roots: Sequence[str], allow_urls: bool) -> LocationRules:
        """Resolve the configured roots once, so a root may itself be a symlink."""
        return cls(tuple(Path(root).resolve() for root in roots), allow_urls)


def find_location(taskinfo: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The field that names the notebook and its raw value, or ``None``."""
    notebook = taskinfo.get("notebook")
    if is_object(notebook):
        return "taskinfo.notebook.location", notebook.get("location")
    if "notebook" in taskinfo:
        return "taskinfo.notebook", notebook
    if "location" in taskinfo:
        return "taskinfo.location", taskinfo["location"]
    return None


def url_scheme(text: str) -> str:
    """``urlsplit(text).scheme``, raising the same ``ValueError`` for a
    malformed URL; an http(s) URL with a host, and a text with no ``:`` that
    does not start with ``/`` or a blank, are read without ``urlsplit``."""
    if _WEB_URL.fullmatch(text):
        return text[: text.index(":")].lower()
    if text and ":" not in text and text[0] not in _NOT_PLAIN_START:
        return ""
    return urlsplit(text).scheme


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
    if _WEB_URL.fullmatch(value):
        return _url_allowed(field, rules)
    try:
        if value[0] == "/" and value[1:2] not in ("/", "\t", "\n", "\r"):
            return _check_path(field, value, rules)  # no scheme, no netloc
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
    return _url_allowed(field, rules)


def _url_allowed(field: str, rules: LocationRules) -> Reason | None:
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
        message = f"the notebook path {text!r} is not under a notebook root ({rules.roots_text})"
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
