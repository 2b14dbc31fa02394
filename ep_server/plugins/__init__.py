"""The plugin registry: discovery, isolation and the task-type index.

Plugins are found through the ``ep_server`` entry-point group (the built-in
ones too) and registered with pluggy, which checks every hook
implementation's signature against :mod:`ep_server.hookspecs`. Loading is
isolated plugin by plugin: one that fails to import, to register or to start
is recorded as FAILED with its error and skipped; the rest load. Only a
plugin *configuration* error stops start-up, since that is the operator's to
fix (:class:`~ep_server.errors.PluginConfigError`).

The hooks are then called on each plugin directly, with its own config, and
never broadcast: at start-up the registry builds a dict from task type to the
plugins claiming it, so an ``Ask`` costs one lookup, not a call to every
plugin. pluggy still supplies discovery conventions, signature validation
and the hookimpl records; its broadcast call loop is not used.
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy
import pydantic

from ep_server import hookspecs
from ep_server.config import Settings
from ep_server.errors import PluginConfigError, StartupError
from ep_server.model import Claim, HostInfo, TaskQuery
from ep_server.uri import uri_problem

__all__ = [
    "Claimant",
    "PluginRecord",
    "PluginState",
    "Registry",
    "default_sources",
    "load_registry",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
SCHEDULING_HOOKS = ("ep_resources", "ep_slot", "ep_booked", "ep_cancelled")


class PluginState(enum.Enum):
    """What became of a plugin at start-up."""

    LOADED = 1
    FAILED = 2
    BLOCKED = 3


@dataclass
class PluginRecord:
    """One plugin as ``GetServiceInfo`` reports it."""

    name: str
    distribution: str
    version: str
    state: PluginState = PluginState.LOADED
    error: str = ""
    claims: tuple[Claim, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimant:
    """A plugin that claims a task type, with its ``ep_evaluate`` bound to its
    config and the host, ready to call with a :class:`TaskQuery`."""

    plugin: str
    evaluate: Callable[..., Any]
    is_async: bool


class _Source(Protocol):
    """What the registry needs of an entry point (a Protocol so tests can fake one)."""

    @property
    def name(self) -> str: ...

    def load(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class BoundHook:
    """A hook implementation with its config and host bound: call it with
    the per-call arguments; it takes those it declares."""

    function: Callable[..., Any]
    argnames: tuple[str, ...]
    fixed: dict[str, Any]
    is_async: bool

    def __call__(self, **arguments: Any) -> Any:
        values = {**self.fixed, **arguments}
        return self.function(*(values.get(name) for name in self.argnames))


@dataclass
class Registry:
    """The loaded plugins and the task-type index. Immutable once built."""

    host: HostInfo
    records: list[PluginRecord] = field(default_factory=list)
    index: dict[str, tuple[Claimant, ...]] = field(default_factory=dict)
    #: The plugins implementing ``ep_policy``, consulted on every Ask.
    policies: tuple[Claimant, ...] = ()
    #: The scheduling hooks (ep_resources, ep_slot, ep_booked, ep_cancelled):
    #: hook name -> plugin name -> the bound implementation.
    scheduling: dict[str, dict[str, BoundHook]] = field(default_factory=dict)

    def call(self, hook: str, plugin: str, **arguments: Any) -> Any:
        """Call ``plugin``'s ``hook`` with the arguments it asks for; None
        when the plugin does not implement it."""
        bound = self.scheduling.get(hook, {}).get(plugin)
        return None if bound is None else bound(**arguments)

    def claimants(self, tasktype: str) -> tuple[Claimant, ...]:
        """The plugins claiming ``tasktype`` (empty if none)."""
        return self.index.get(tasktype, ())

    @property
    def loaded(self) -> list[PluginRecord]:
        """The records of the plugins that loaded."""
        return [r for r in self.records if r.state is PluginState.LOADED]


def load_registry(
    settings: Settings,
    host: HostInfo,
    sources: Iterable[_Source] | None = None,
) -> Registry:
    """Discover, register, configure and index the plugins.

    :param sources: entry points to load; by default those of the
        ``ep_server`` group plus ``[plugins].modules``.
    :raises StartupError: when a plugin's configuration is invalid.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if sources is None:
        sources = default_sources(settings)
    registry = Registry(host=host)
    config_errors: list[str] = []
    seen: dict[str, PluginRecord] = {}
    for source in sorted(sources, key=lambda s: s.name):
        record = _record_for(source)
        registry.records.append(record)
        if source.name in seen:
            _fail(record, f"duplicate plugin name; {seen[source.name].distribution} has it too")
            continue
        seen[source.name] = record
        if _blocked(source.name, settings):
            record.state = PluginState.BLOCKED
            continue
        if _register(pm, source, record):
            _start(pm, record, settings, host, registry, config_errors)
    _drop_replaced_fallbacks(registry)
    unknown = sorted(set(settings.plugin) - set(seen))
    if unknown:
        log.warning("config has sections for plugins that are not installed: %s", unknown)
    if config_errors:
        raise StartupError("invalid plugin configuration:\n" + "\n".join(config_errors))
    return registry


def _drop_replaced_fallbacks(registry: Registry) -> None:
    """Withdraw fallback claims on task types that another plugin claims
    regularly (a plugin's own claims on one task type are merged first)."""
    regular = {c.tasktype for r in registry.loaded for c in r.claims if not c.fallback}
    for record in registry.loaded:
        yielded = [c for c in record.claims if c.fallback and c.tasktype in regular]
        for claim in yielded:
            kept = [x for x in registry.index[claim.tasktype] if x.plugin != record.name]
            registry.index[claim.tasktype] = tuple(kept)
            log.info("fallback claim of %s on %s withdrawn", record.name, claim.tasktype)
        record.claims = tuple(c for c in record.claims if c not in yielded)


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


def _fail(record: PluginRecord, error: str) -> None:
    record.state = PluginState.FAILED
    record.error = error
    log.error("plugin %s (%s) failed and is skipped: %s", record.name, record.distribution, error)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _register(pm: pluggy.PluginManager, source: _Source, record: PluginRecord) -> bool:
    try:
        plugin = source.load()
    except Exception as exc:
        log.debug("import of plugin %s failed", source.name, exc_info=True)
        _fail(record, f"import failed: {_describe(exc)}")
        return False
    try:
        pm.register(plugin, name=source.name)
    except Exception as exc:
        _fail(record, f"registration failed: {_describe(exc)}")
        return False
    unknown = [c.name for c in pm.get_hookcallers(plugin) or [] if not c.has_spec()]
    if unknown:
        pm.unregister(plugin)
        _fail(record, f"unknown hooks {unknown}; see ep_server.hookspecs for the hook names")
        return False
    return True


def _impl(pm: pluggy.PluginManager, hook: str, plugin: str) -> pluggy.HookImpl | None:
    caller = getattr(pm.hook, hook)
    for impl in caller.get_hookimpls():
        if impl.plugin_name == plugin:
            return impl  # type: ignore[no-any-return]
    return None


def _bind(impl: pluggy.HookImpl, **available: Any) -> Callable[..., Any]:
    """Bind the opt-in arguments the hookimpl asks for, except ``query``."""
    given = {name: available[name] for name in impl.argnames if name in available}
    return functools.partial(impl.function, **given)


def _start(
    pm: pluggy.PluginManager,
    record: PluginRecord,
    settings: Settings,
    host: HostInfo,
    registry: Registry,
    config_errors: list[str],
) -> None:
    name = record.name
    section = settings.plugin.get(name, {})
    try:
        configure = _impl(pm, "ep_configure", name)
        config = _bind(configure, settings=section, host=host)() if configure else None
    except PluginConfigError as exc:
        config_errors.append(f"  plugin.{name}.{exc.key}: {exc.message}")
        return
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            config_errors.append(f"  plugin.{name}.{key}: {err['msg']}")
        return
    except Exception as exc:
        _fail(record, f"ep_configure raised {_describe(exc)}")
        pm.unregister(name=name)
        return
    try:
        claims = _claims(pm, name, config, host)
        claimant = _claimant(pm, name, config, host) if claims else None
    except Exception as exc:
        _fail(record, str(exc) if isinstance(exc, _PluginError) else _describe(exc))
        pm.unregister(name=name)
        return
    policy = _impl(pm, "ep_policy", name)
    if policy is not None:
        evaluate = _evaluator(policy.function, policy.argnames, {"config": config, "host": host})
        is_async = inspect.iscoroutinefunction(policy.function)
        registry.policies = (*registry.policies, Claimant(name, evaluate, is_async))
    for hook in SCHEDULING_HOOKS:
        impl = _impl(pm, hook, name)
        if impl is not None:
            bound = BoundHook(
                impl.function,
                tuple(impl.argnames),
                {"config": config, "host": host},
                inspect.iscoroutinefunction(impl.function),
            )
            registry.scheduling.setdefault(hook, {})[name] = bound
    record.claims = claims
    for claim in claims:
        registry.index[claim.tasktype] = (*registry.claimants(claim.tasktype), claimant)  # type: ignore[arg-type]


class _PluginError(Exception):
    """A plugin broke the hook contract; the message says how."""


def _claims(pm: pluggy.PluginManager, name: str, config: Any, host: HostInfo) -> tuple[Claim, ...]:
    impl = _impl(pm, "ep_claims", name)
    if impl is None:
        return ()
    claims = _bind(impl, config=config, host=host)()
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


def _claimant(pm: pluggy.PluginManager, name: str, config: Any, host: HostInfo) -> Claimant:
    impl = _impl(pm, "ep_evaluate", name)
    if impl is None:
        raise _PluginError("claims task types but implements no ep_evaluate")
    if impl.wrapper or impl.hookwrapper:
        raise _PluginError("ep_evaluate may not be a hook wrapper")
    evaluate = _evaluator(impl.function, impl.argnames, {"config": config, "host": host})
    return Claimant(name, evaluate, inspect.iscoroutinefunction(impl.function))


def _evaluator(
    fn: Callable[..., Any], names: Sequence[str], values: dict[str, Any]
) -> Callable[[TaskQuery], Any]:
    """``fn`` as a one-argument callable for the hot path: the opt-in
    arguments it asks for are bound once, positionally in its own order, so
    a call costs no keyword merging."""
    args = [values.get(n) for n in names]
    if "query" not in names:
        return lambda query: fn(*args)
    i = list(names).index("query")
    before, after = args[:i], args[i + 1 :]
    if before:
        return lambda query: fn(*before, query, *after)
    if not after:
        return fn
    if len(after) == 1:
        (a,) = after
        return lambda query: fn(query, a)
    if len(after) == 2:  # the common (query, config, host)
        a, b = after
        return lambda query: fn(query, a, b)
    return lambda query: fn(query, *after)
