"""Which kernel languages the host has, and which ones the taskinfo asks for.

The host's kernels are found once, at start-up, in this order:

1. ``kernels`` in the config, when set (the operator knows best);
2. ``jupyter_client.kernelspec.KernelSpecManager``, when Jupyter is installed
   in the EP's environment;
3. otherwise the kernelspec directories Jupyter itself would search
   (``kernels/*/kernel.json`` under each data directory of
   ``jupyter --paths``), reading each spec's ``"language"``.

A request may name a kernel by language (``python``, ``R``) or by kernelspec
name (``python3``, ``ir``); both match, case-insensitively.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as derived
from pathlib import Path
from typing import Any

from ep_plugin_jupyter import reasons as R
from ep_plugin_jupyter.values import is_object
from ep_server import Reason

__all__ = [
    "Kernels",
    "check_kernels",
    "discover_kernels",
    "jupyter_data_dirs",
    "requested_languages",
    "scan_kernel_dirs",
]

#: Taskinfo keys that name kernel languages: one string, or a list of them.
_SINGLE = ("kernel", "language")
_MULTIPLE = ("languages",)
_KEYS = frozenset((*_SINGLE, *_MULTIPLE))


@dataclass(frozen=True, slots=True)
class Kernels:
    """The host's kernels: kernelspec name to language, and where they came
    from. ``names`` (every kernelspec name and language) and ``available``
    (the languages as a refusal names them) are derived when it is made."""

    specs: Mapping[str, str]
    source: str
    names: frozenset[str] = derived(init=False, repr=False, compare=False)
    available: str = derived(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset((*self.specs, *self.specs.values())))
        object.__setattr__(self, "available", ", ".join(self.languages()) or "none")

    def has(self, wanted: str) -> bool:
        """Whether a kernel of this language, or with this name, is installed."""
        return wanted.strip().lower() in self.names

    def languages(self) -> list[str]:
        """The installed languages, sorted (kernel names when a spec has none)."""
        return sorted({language or name for name, language in self.specs.items()})


def discover_kernels(
    configured: Sequence[str] | None, data_dirs: Sequence[Path] | None = None
) -> Kernels:
    """The host's kernels: from the config when set, else as Jupyter finds them."""
    if configured is not None:
        return Kernels(
            {name.strip().lower(): name.strip().lower() for name in configured}, "config"
        )
    specs = _from_jupyter_client()
    if specs is not None:
        return Kernels(specs, "jupyter_client")
    dirs = jupyter_data_dirs() if data_dirs is None else data_dirs
    return Kernels(scan_kernel_dirs(dirs), "kernelspec directories")


def _from_jupyter_client() -> dict[str, str] | None:
    try:
        kernelspec: Any = importlib.import_module("jupyter_client.kernelspec")
        specs = kernelspec.KernelSpecManager().get_all_specs()
    except Exception:  # not installed, or broken: scan the directories instead
        return None
    return {str(name).lower(): _spec_language(info.get("spec")) for name, info in specs.items()}


def _spec_language(spec: Any) -> str:
    language = spec.get("language") if isinstance(spec, Mapping) else None
    return language.strip().lower() if isinstance(language, str) else ""


def jupyter_data_dirs() -> list[Path]:
    """Jupyter's data directories, highest priority first, as ``jupyter --paths``
    lists them: ``$JUPYTER_PATH``, the user's, the environment's, the system's."""
    env = os.environ
    dirs = [Path(p) for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(env["JUPYTER_DATA_DIR"]) if env.get("JUPYTER_DATA_DIR") else _user_data_dir())
    dirs.append(Path(sys.prefix, "share", "jupyter"))
    dirs += [Path("/usr/local/share/jupyter"), Path("/usr/share/jupyter")]
    return list(dict.fromkeys(dirs))


def _user_data_dir() -> Path:
    if sys.platform == "darwin":
        return Path(os.path.expanduser("~/Library/Jupyter"))
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(xdg, "jupyter")


def scan_kernel_dirs(data_dirs: Iterable[Path]) -> dict[str, str]:
    """Kernelspec name to language, from ``<dir>/kernels/*/kernel.json``; an
    earlier directory wins for a name, as in Jupyter. Unreadable specs are skipped."""
    found: dict[str, str] = {}
    for data_dir in data_dirs:
        for spec_file in sorted(Path(data_dir, "kernels").glob("*/kernel.json")):
            spec = _read_json(spec_file)
            if spec is not None:
                found.setdefault(spec_file.parent.name.lower(), _spec_language(spec))
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def requested_languages(taskinfo: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[Reason]]:
    """The kernel languages the taskinfo asks for, each with its field, and a
    reason for each malformed entry. Looks at the top level and, when
    ``notebook`` is an object, inside it."""
    wanted: list[tuple[str, str]] = []
    bad: list[Reason] = []
    scopes = [("taskinfo", taskinfo)]
    if is_object(taskinfo.get("notebook")):
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
    if _KEYS.isdisjoint(taskinfo):
        notebook = taskinfo.get("notebook")
        if not is_object(notebook) or _KEYS.isdisjoint(notebook):
            return []
    wanted, reasons = requested_languages(taskinfo)
    reasons += [_unavailable(f, lang, kernels) for f, lang in wanted if not kernels.has(lang)]
    return reasons


def _unavailable(field: str, language: str, kernels: Kernels) -> Reason:
    message = f"no {language!r} kernel on this host (kernels available: {kernels.available})"
    return R.reason(R.KERNEL_UNAVAILABLE, field, message)
