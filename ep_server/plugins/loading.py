"""Loading plugins: discovery, isolation, configuration and the index.

Plugins are found through the ``ep_server`` entry-point group (the built-in
ones too) and ``[plugins].modules``, and registered with pluggy, which
checks every hook implementation's signature against
:mod:`ep_server.hookspecs`. Loading is isolated plugin by plugin: one that
fails to import, to register or to start is recorded as FAILED with its
error and skipped; the rest load. Only a plugin *configuration* error stops
start-up, since that is the operator's to fix
(:class:`~ep_server.errors.PluginConfigError`).

Hooks are then called on each plugin directly, with its own config, and
never broadcast: the registry maps each task type to the plugins claiming
it, so an ``Ask`` costs one lookup, not a call to every plugin. pluggy
supplies discovery conventions, signature validation and the hookimpl
records; its broadcast call loop is not used.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

import pluggy
import pydantic

from ep_server import hookspecs
from ep_server.config import Settings
from ep_server.config_problems import problem_line
from ep_server.errors import ConfigError, PluginConfigError
from ep_server.model import Claim, HostInfo
from ep_server.plugins.contract import HOOKS
from ep_server.plugins.registry import Impl, PluginRecord, PluginState, Registry
from ep_server.uri import uri_problem

__all__ = ["ENTRY_POINT_GROUP", "default_sources", "load_registry"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
#: The hooks called on one plugin at a time (by plugin name).
_PER_PLUGIN = ("ep_resources", "ep_slot", "ep_booked", "ep_cancelled")


class _Source(Protocol):
    """What loading needs of an entry point (a Protocol so tests can fake one)."""

    @property
    def name(self) -> str: ...

    def load(self) -> Any: ...


@dataclass
class _Draft:
    """What loading gathers before the registry is frozen."""

    host: HostInfo
    records: list[PluginRecord] = field(default_factory=list)
    index: dict[str, list[Impl[..., Any]]] = field(default_factory=dict)
    policies: list[Impl[..., Any]] = field(default_factory=list)
    by_plugin: dict[str, dict[str, Impl[..., Any]]] = field(default_factory=dict)
    config_errors: list[str] = field(default_factory=list)

    def freeze(self) -> Registry:
        return Registry(
            host=self.host,
            records=tuple(self.records),
            index=MappingProxyType({k: tuple(v) for k, v in self.index.items()}),
            policies=tuple(self.policies),
            by_plugin=MappingProxyType(
                {hook: MappingProxyType(impls) for hook, impls in self.by_plugin.items()}
            ),
        )


def load_registry(
    settings: Settings,
    host: HostInfo,
    sources: Iterable[_Source] | None = None,
) -> Registry:
    """Discover, register, configure and index the plugins.

    :param sources: entry points to load; by default those of the
        ``ep_server`` group plus ``[plugins].modules``.
    :raises ConfigError: (a StartupError) when a plugin's configuration is invalid.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if sources is None:
        sources = default_sources(settings)
    draft = _Draft(host)
    seen: dict[str, PluginRecord] = {}
    for source in sorted(sources, key=lambda s: s.name):
        record = _record_for(source)
        if source.name in seen:
            draft.records.append(
                _fail(record, f"duplicate plugin name; {seen[source.name].distribution} has it too")
            )
            continue
        seen[source.name] = record
        if _blocked(source.name, settings):
            draft.records.append(replace(record, state=PluginState.BLOCKED))
            continue
        error = _register(pm, source)
        if error:
            draft.records.append(_fail(record, error))
            continue
        draft.records.append(_start(pm, record, settings, draft))
    _drop_replaced_fallbacks(draft)
    unknown = sorted(set(settings.plugin) - set(seen))
    if unknown:
        log.warning("config has sections for plugins that are not installed: %s", unknown)
    if draft.config_errors:
        raise ConfigError("invalid plugin configuration:\n" + "\n".join(draft.config_errors))
    return draft.freeze()


def default_sources(settings: Settings) -> list[Any]:
    """Where plugins come from: the ``ep_server`` entry-point group, then
    ``[plugins].modules``."""
    modules = [_ModuleSource(spec) for spec in settings.plugins.modules]
    return [*importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), *modules]


@dataclass
class _ModuleSource:
    """A plugin named in ``[plugins].modules``, by import path as in an entry
    point: ``pkg.mod``, ``pkg.mod:attr``, or ``name=pkg.mod[:attr]``."""

    spec: str

    @property
    def name(self) -> str:
        name, sep, _ = self.spec.partition("=")
        return name if sep else self.spec

    def load(self) -> Any:
        value = self.spec.rpartition("=")[2]
        return importlib.metadata.EntryPoint(self.name, value, ENTRY_POINT_GROUP).load()


def _record_for(source: _Source) -> PluginRecord:
    dist = getattr(source, "dist", None)
    if dist is None:
        return PluginRecord(source.name, "(module)", "")
    return PluginRecord(source.name, dist.name, dist.version)


def _blocked(name: str, settings: Settings) -> bool:
    allow = settings.plugins.allow
    return name in settings.plugins.block or (allow is not None and name not in allow)


def _fail(record: PluginRecord, error: str) -> PluginRecord:
    log.error("plugin %s (%s) failed and is skipped: %s", record.name, record.distribution, error)
    return replace(record, state=PluginState.FAILED, error=error)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _register(pm: pluggy.PluginManager, source: _Source) -> str:
    """Import and register one plugin; what went wrong, or ``""``."""
    try:
        plugin = source.load()
    except Exception as exc:
        log.debug("import of plugin %s failed", source.name, exc_info=True)
        return f"import failed: {_describe(exc)}"
    try:
        pm.register(plugin, name=source.name)
    except Exception as exc:
        return f"registration failed: {_describe(exc)}"
    unknown = [c.name for c in pm.get_hookcallers(plugin) or [] if not c.has_spec()]
    if unknown:
        pm.unregister(plugin)
        return f"unknown hooks {unknown}; see ep_server.hookspecs for the hook names"
    return ""


class _PluginError(Exception):
    """A plugin broke the hook contract at start-up; the message says how."""


def _start(
    pm: pluggy.PluginManager, record: PluginRecord, settings: Settings, draft: _Draft
) -> PluginRecord:
    """Configure one registered plugin and index its hooks; its record."""
    name, host = record.name, draft.host
    section = settings.plugin.get(name, {})
    try:
        configure = _impl(pm, "ep_configure", name)
        config = _call(configure, settings=section, host=host) if configure else None
    except PluginConfigError as exc:
        key = f"plugin.{name}.{exc.key}"
        draft.config_errors.append(
            problem_line(key, exc.message, settings.origins, settings.source)
        )
        return record
    except pydantic.ValidationError as exc:
        draft.config_errors.extend(settings.problems(exc, prefix=f"plugin.{name}."))
        return record
    except Exception as exc:
        pm.unregister(name=name)
        return _fail(record, f"ep_configure raised {_describe(exc)}")
    fixed = {"config": config, "host": host}
    try:
        claims = _claims(pm, name, fixed)
        evaluate = _bound(pm, "ep_evaluate", name, fixed) if claims else None
        if claims and evaluate is None:
            raise _PluginError("claims task types but implements no ep_evaluate")
    except Exception as exc:
        pm.unregister(name=name)
        return _fail(record, str(exc) if isinstance(exc, _PluginError) else _describe(exc))
    policy = _bound(pm, "ep_policy", name, fixed)
    if policy is not None:
        draft.policies.append(policy)
    for hook in _PER_PLUGIN:
        impl = _bound(pm, hook, name, fixed)
        if impl is not None:
            draft.by_plugin.setdefault(hook, {})[name] = impl
    for claim in claims:
        draft.index.setdefault(claim.tasktype, []).append(evaluate)  # type: ignore[arg-type]
    return replace(record, claims=claims)


def _drop_replaced_fallbacks(draft: _Draft) -> None:
    """Withdraw fallback claims on task types that another plugin claims
    regularly (a plugin's own claims on one task type are merged first)."""
    loaded = [r for r in draft.records if r.state is PluginState.LOADED]
    regular = {c.tasktype for r in loaded for c in r.claims if not c.fallback}
    for i, record in enumerate(draft.records):
        yielded = [c for c in record.claims if c.fallback and c.tasktype in regular]
        for claim in yielded:
            kept = [x for x in draft.index[claim.tasktype] if x.plugin != record.name]
            draft.index[claim.tasktype] = kept
            log.info("fallback claim of %s on %s withdrawn", record.name, claim.tasktype)
        if yielded:
            claims = tuple(c for c in record.claims if c not in yielded)
            draft.records[i] = replace(record, claims=claims)


def _impl(pm: pluggy.PluginManager, hook: str, plugin: str) -> pluggy.HookImpl | None:
    caller = getattr(pm.hook, hook)
    for impl in caller.get_hookimpls():
        if impl.plugin_name == plugin:
            return impl  # type: ignore[no-any-return]
    return None


def _call(impl: pluggy.HookImpl, **available: Any) -> Any:
    """Call a start-up hook with the opt-in arguments it asks for."""
    return impl.function(*(available[name] for name in impl.argnames))


def _claims(pm: pluggy.PluginManager, name: str, fixed: dict[str, Any]) -> tuple[Claim, ...]:
    impl = _impl(pm, "ep_claims", name)
    if impl is None:
        return ()
    claims = _call(impl, **fixed)
    if not isinstance(claims, Iterable):
        raise _PluginError(f"ep_claims returned {type(claims).__name__}, not a list of Claim")
    result: dict[str, Claim] = {}
    for claim in claims:
        _check_claim(claim)
        prior = result.get(claim.tasktype)
        servicetypes = (*prior.servicetypes, *claim.servicetypes) if prior else claim.servicetypes
        fallback = claim.fallback and (prior is None or prior.fallback)
        result[claim.tasktype] = Claim(claim.tasktype, tuple(dict.fromkeys(servicetypes)), fallback)
    return tuple(result.values())


def _check_claim(claim: Any) -> None:
    if not isinstance(claim, Claim):
        raise _PluginError(f"ep_claims returned {claim!r}, not a Claim")
    problems: Sequence[str | None] = [
        uri_problem(claim.tasktype),
        *(uri_problem(s) for s in claim.servicetypes),
    ]
    bad = [p for p in problems if p]
    if bad:
        raise _PluginError(f"ep_claims returned an invalid claim {claim!r}: {bad[0]}")


def _bound(
    pm: pluggy.PluginManager, hook: str, plugin: str, fixed: dict[str, Any]
) -> Impl[..., Any] | None:
    """``plugin``'s implementation of ``hook``, bound to its config and the
    host, or None when it has none."""
    impl = _impl(pm, hook, plugin)
    if impl is None:
        return None
    if impl.wrapper or impl.hookwrapper:
        raise _PluginError(f"{hook} may not be a hook wrapper")
    contract = HOOKS[hook]
    function = _binder(impl.function, impl.argnames, fixed, contract.arguments)
    return Impl(plugin, contract, function, inspect.iscoroutinefunction(impl.function))


def _binder(
    fn: Callable[..., Any],
    names: Sequence[str],
    fixed: dict[str, Any],
    per_call: tuple[str, ...],
) -> Callable[..., Any]:
    """``fn`` as a callable of the per-call arguments only, in ``per_call``
    order: the opt-in arguments it asks for are bound once, positionally in
    its own order, so a call costs no keyword merging. A hookimpl may take
    any subset of the arguments (pluggy's opt-in arguments)."""
    slots = [(per_call.index(n), None) if n in per_call else (-1, fixed.get(n)) for n in names]
    if [i for i, _ in slots] == list(range(len(per_call))):
        return fn  # takes exactly the per-call arguments, in order
    if len(per_call) == 1:  # the hot path (ep_evaluate, ep_policy): one argument
        return _bind_one(fn, slots)

    def bound(*call: Any) -> Any:
        return fn(*(call[i] if i >= 0 else value for i, value in slots))

    return bound


def _bind_one(fn: Callable[..., Any], slots: list[tuple[int, Any]]) -> Callable[[Any], Any]:
    """A binder for a hook with one per-call argument (the common
    ``(query, config, host)`` shape costs one closure call)."""
    if all(i < 0 for i, _ in slots):
        args = [value for _, value in slots]
        return lambda arg: fn(*args)
    at = next(n for n, (i, _) in enumerate(slots) if i >= 0)
    before = [value for _, value in slots[:at]]
    after = [value for _, value in slots[at + 1 :]]
    if before:
        return lambda arg: fn(*before, arg, *after)
    if len(after) == 1:
        (a,) = after
        return lambda arg: fn(arg, a)
    if len(after) == 2:
        a, b = after
        return lambda arg: fn(arg, a, b)
    return lambda arg: fn(arg, *after)
