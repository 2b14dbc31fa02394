"""The jupyter plugin's decision written plainly, step by step: the oracle
that ``test_equivalence.py`` checks ``decide()``, ``check_location()`` and
``check_kernels()`` against.

Each step takes every URL apart with ``urlsplit``, works out what it needs
from the site on every call and prepares nothing; the plugin's modules
must give the same verdicts, reasons, messages and offers for every input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote, urlsplit

from ep_plugin_jupyter import reasons as R
from ep_plugin_jupyter.config import Service
from ep_plugin_jupyter.decide import Site
from ep_plugin_jupyter.kernels import Kernels
from ep_plugin_jupyter.location import LocationRules
from ep_server import Offer, Reason, TaskQuery, Verdict
from ep_server.fitting import INSUFFICIENT_CORES, INSUFFICIENT_MEMORY, Limit, LimitLike
from ep_server.model import Cause, IntRange, Resources

ResourceName: TypeAlias = Literal["cores", "memory"]

_HINT = "an http(s) URL or an absolute path under a notebook root"
_SINGLE = ("kernel", "language")
_MULTIPLE = ("languages",)
NOTEBOOK_GETS = "a notebook here gets"
KNOWN_FIELDS = {
    "taskinfo": ("notebook", "location", "kernel", "language", "languages", "requirements"),
    "taskinfo.notebook": ("location", "kernel", "language", "languages", "requirements"),
}


def has_kernel(kernels: Kernels, wanted: str) -> bool:
    """Whether a kernel of this language, or with this name, is installed."""
    key = wanted.strip().lower()
    return key in kernels.specs or key in kernels.specs.values()


# --- location --------------------------------------------------------------


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


# --- kernels ---------------------------------------------------------------


def requested_languages(taskinfo: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[Reason]]:
    """The kernel languages the taskinfo asks for, each with its field, and a
    reason for each malformed entry. Looks at the top level and, when
    ``notebook`` is an object, inside it."""
    wanted: list[tuple[str, str]] = []
    bad: list[Reason] = []
    scopes = [("taskinfo", taskinfo)]
    if isinstance(taskinfo.get("notebook"), Mapping):
        scopes.append(("taskinfo.notebook", taskinfo["notebook"]))
    for prefix, scope in scopes:
        for field, value in _entries(prefix, scope):
            _sort(field, value, wanted, bad)
    return wanted, bad


def _entries(prefix: str, scope: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    for key in _SINGLE:
        if key in scope:
            yield f"{prefix}.{key}", scope[key]
    for key in _MULTIPLE:
        value = scope.get(key)
        if isinstance(value, list):
            yield from ((f"{prefix}.{key}[{i}]", item) for i, item in enumerate(value))
        elif key in scope:
            yield f"{prefix}.{key}", value


def _sort(field: str, value: Any, wanted: list[tuple[str, str]], bad: list[Reason]) -> None:
    if isinstance(value, str) and value.strip():
        wanted.append((field, value.strip()))
    else:
        message = f"a kernel language must be a non-empty string such as 'python', not {value!r}"
        bad.append(R.reason(R.INVALID_KERNEL, field, message))


def check_kernels(taskinfo: Mapping[str, Any], kernels: Kernels) -> list[Reason]:
    """A reason for every kernel language asked for that the host lacks, and
    for every malformed one. Asking for none is fine."""
    wanted, reasons = requested_languages(taskinfo)
    reasons += [
        _unavailable(f, lang, kernels) for f, lang in wanted if not has_kernel(kernels, lang)
    ]
    return reasons


def _unavailable(field: str, language: str, kernels: Kernels) -> Reason:
    have = ", ".join(kernels.languages()) or "none"
    message = f"no {language!r} kernel on this host (kernels available: {have})"
    return R.reason(R.KERNEL_UNAVAILABLE, field, message)


# --- fitting ---------------------------------------------------------------

_CODES: dict[str, str] = {"cores": INSUFFICIENT_CORES, "memory": INSUFFICIENT_MEMORY}
_UNITS: dict[str, str] = {"cores": "", "memory": " bytes"}
_GETS = "a task here gets"


@dataclass(frozen=True, slots=True)
class RangeFit:
    """One resource fitted: the range to offer, and a note on a capped
    maximum or the reason a minimum cannot be met."""

    offered: IntRange
    note: str = ""
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Fit:
    """Both resources fitted: what to offer, the notes on what was capped,
    and the reasons when a minimum cannot be met (then decline)."""

    resources: Resources
    notes: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()

    @property
    def message(self) -> str:
        """The notes as one offer message (``""`` when nothing was capped)."""
        return "; ".join(self.notes)


def fit_range(
    asked: IntRange, limit: LimitLike, name: ResourceName, *, gets: str = _GETS
) -> RangeFit:
    """Fit the range asked for one resource under ``limit`` (see the module's rule)."""
    bound = limit if isinstance(limit, Limit) else Limit(limit)
    if bound.value is None:
        return RangeFit(asked)
    value, unit = bound.value, _UNITS[name]
    if asked.min is not None and asked.min > value:
        return RangeFit(asked, reason=_insufficient(asked.min, bound, name, gets))
    if asked.max is None:
        return RangeFit(IntRange(asked.min, value))
    if asked.max <= value:
        return RangeFit(asked)
    capped = f"{value}{unit} ({bound.source})" if bound.source else f"the limit of {value}{unit}"
    return RangeFit(IntRange(asked.min, value), f"{name} capped at {capped}")


def _insufficient(minimum: int, limit: Limit, name: ResourceName, gets: str) -> Reason:
    unit = _UNITS[name]
    message = f"asked for at least {minimum}{unit} of {name}; {gets} at most {limit.value}{unit}"
    if limit.source:
        message += f" ({limit.source})"
    return Reason(_CODES[name], message, Cause.CAPACITY, False, f"resources.{name}.min")


def fit_resources(
    asked: Resources,
    *,
    cores: LimitLike = None,
    memory: LimitLike = None,
    gets: str = _GETS,
) -> Fit:
    """Fit a request's cores and memory under their limits (``None``: no
    limit); the reasons of both when neither minimum can be met."""
    fitted = (
        fit_range(asked.cores, cores, "cores", gets=gets),
        fit_range(asked.memory, memory, "memory", gets=gets),
    )
    return Fit(
        Resources(fitted[0].offered, fitted[1].offered),
        tuple(f.note for f in fitted if f.note),
        tuple(f.reason for f in fitted if f.reason),
    )


# --- decide ----------------------------------------------------------------


def decide(query: TaskQuery, site: Site) -> Verdict:
    """YES with one offer per configured service, or NO with every reason."""
    fit = fit_resources(query.resources, cores=site.cores, memory=site.memory, gets=NOTEBOOK_GETS)
    location = check_location(query.taskinfo, site.location)
    reasons: list[Reason] = [location] if location else []
    reasons += check_kernels(query.taskinfo, site.kernels)
    reasons += check_requirements(query.taskinfo)
    reasons += fit.reasons
    if reasons:
        return Verdict.no(*reasons)
    ignored = ignored_fields(query.taskinfo)
    note = f"ignored taskinfo fields this site does not know: {', '.join(ignored)}"
    message = "; ".join(m for m in (fit.message, note if ignored else "") if m)
    return Verdict.yes(*(_offer(service, fit, message) for service in site.services))


def check_requirements(taskinfo: Mapping[str, Any]) -> list[Reason]:
    """What is wrong with ``requirements`` (a pip requirements file: an
    http(s) URL, or a path relative to the notebook's location), at the top
    level or in a ``notebook`` object."""
    scopes: list[tuple[str, Mapping[str, Any]]] = [("taskinfo", taskinfo)]
    notebook = taskinfo.get("notebook")
    if isinstance(notebook, Mapping):
        scopes.append(("taskinfo.notebook", notebook))
    reasons = []
    for path, scope in scopes:
        value = scope.get("requirements")
        if value is None:
            continue
        where = f"{path}.requirements"
        if not isinstance(value, str) or not value.strip():
            message = f"{where}: must be a URL or a relative path, as a non-empty string"
            reasons.append(R.reason(R.INVALID_REQUIREMENTS, where, message))
            continue
        try:
            scheme = urlsplit(value).scheme
        except ValueError as exc:
            message = f"{where}: {value!r} is not a URL: {exc}"
            reasons.append(R.reason(R.INVALID_REQUIREMENTS, where, message))
            continue
        if scheme and scheme not in ("http", "https"):
            message = f"{where}: {value!r} is neither an http(s) URL nor a relative path"
            reasons.append(R.reason(R.INVALID_REQUIREMENTS, where, message))
    return reasons


def ignored_fields(taskinfo: Mapping[str, Any]) -> tuple[str, ...]:
    """The taskinfo fields this plugin does not read, each as a path with
    the nearest known field if any (``taskinfo.kernal (did you mean
    kernel?)``)."""
    scopes: list[tuple[str, Mapping[str, Any]]] = [("taskinfo", taskinfo)]
    notebook = taskinfo.get("notebook")
    if isinstance(notebook, Mapping):
        scopes.append(("taskinfo.notebook", notebook))
    ignored = []
    for path, scope in scopes:
        known = KNOWN_FIELDS[path]
        for key in scope:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                ignored.append(f"{path}.{key}" + (f" (did you mean {near[0]}?)" if near else ""))
    return tuple(ignored)


def _offer(service: Service, fit: Fit, message: str) -> Offer:
    return Offer(service.servicetype, service.serviceinfo, fit.resources, message)
