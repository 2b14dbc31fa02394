"""The loaded plugins: their records, the task-type index, and a typed
facade with one method per hook.

A :class:`Registry` is built once at start-up by
:func:`ep_server.plugins.loading.load_registry` and never changes after: it
is frozen, and its tables are read-only views. Hooks are reached through its
methods (``registry.ep_evaluate(tasktype)``, ``registry.ep_slot(plugin)``
...), each returning :class:`Impl` objects whose types say what the hook is
called with and returns, so every call site is checked by mypy; the
:class:`~ep_server.plugins.caller.PluginCaller` calls them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

from ep_server.model import Booking, Claim, HostInfo, Reason, Slot, TaskQuery, Verdict
from ep_server.plugins.contract import HookContract

__all__ = [
    "EvaluateImpl",
    "Impl",
    "NotifyImpl",
    "PluginRecord",
    "PluginState",
    "PolicyImpl",
    "Registry",
    "ResourcesImpl",
    "SlotImpl",
]

P = ParamSpec("P")
T = TypeVar("T")


class PluginState(enum.Enum):
    """What became of a plugin at start-up."""

    LOADED = 1
    FAILED = 2
    BLOCKED = 3


@dataclass(frozen=True, slots=True)
class PluginRecord:
    """One plugin as ``GetServiceInfo`` reports it."""

    name: str
    distribution: str
    version: str
    state: PluginState = PluginState.LOADED
    error: str = ""
    claims: tuple[Claim, ...] = ()


@dataclass(frozen=True, slots=True)
class Impl(Generic[P, T]):
    """One plugin's implementation of one hook, with its ``config`` and
    ``host`` bound: ``function`` takes the per-call arguments positionally,
    in the order :attr:`contract` names them."""

    plugin: str
    contract: HookContract
    function: Callable[P, T | Awaitable[T]]
    is_async: bool

    @property
    def hook(self) -> str:
        """The hook's name (``"ep_evaluate"`` ...)."""
        return self.contract.name


#: The hooks' call signatures, as the registry hands them out (each result
#: already checked against the hook's contract).
EvaluateImpl = Impl[[TaskQuery], Verdict]
PolicyImpl = Impl[[TaskQuery], tuple[Reason, ...]]
ResourcesImpl = Impl[[TaskQuery], dict[str, int] | None]
SlotImpl = Impl[[TaskQuery, Slot], Reason | None]
NotifyImpl = Impl[[Booking], None]


@dataclass(frozen=True, slots=True)
class Registry:
    """The loaded plugins and their hooks. Immutable once built."""

    host: HostInfo
    records: tuple[PluginRecord, ...]
    #: Task type -> the ``ep_evaluate`` of each plugin claiming it.
    index: Mapping[str, tuple[EvaluateImpl, ...]]
    #: The ``ep_policy`` of each plugin implementing it.
    policies: tuple[PolicyImpl, ...]
    #: Hook name -> plugin name -> its implementation, for the hooks called
    #: on one plugin at a time (``ep_resources``, ``ep_slot``, ``ep_booked``,
    #: ``ep_cancelled``); reach them through the methods below.
    by_plugin: Mapping[str, Mapping[str, Impl[..., Any]]]

    # --- the facade: one method per hook --------------------------------

    def ep_evaluate(self, tasktype: str) -> tuple[EvaluateImpl, ...]:
        """The plugins claiming ``tasktype`` (none when nobody does)."""
        return self.index.get(tasktype, ())

    def ep_policy(self) -> tuple[PolicyImpl, ...]:
        """Every site policy, consulted on every Ask."""
        return self.policies

    def ep_resources(self, plugin: str) -> ResourcesImpl | None:
        """``plugin``'s ``ep_resources``, if it has one."""
        impl: ResourcesImpl | None = self._one("ep_resources", plugin)
        return impl

    def ep_slot(self, plugin: str) -> SlotImpl | None:
        """``plugin``'s ``ep_slot``, if it has one."""
        impl: SlotImpl | None = self._one("ep_slot", plugin)
        return impl

    def ep_booked(self, plugin: str) -> NotifyImpl | None:
        """``plugin``'s ``ep_booked``, if it has one."""
        impl: NotifyImpl | None = self._one("ep_booked", plugin)
        return impl

    def ep_cancelled(self, plugin: str) -> NotifyImpl | None:
        """``plugin``'s ``ep_cancelled``, if it has one."""
        impl: NotifyImpl | None = self._one("ep_cancelled", plugin)
        return impl

    # --- reading ----------------------------------------------------------

    def implementers(self, hook: str) -> frozenset[str]:
        """The plugins implementing ``hook`` (a per-plugin hook's name)."""
        return frozenset(self.by_plugin.get(hook, {}))

    @property
    def loaded(self) -> list[PluginRecord]:
        """The records of the plugins that loaded."""
        return [r for r in self.records if r.state is PluginState.LOADED]

    def _one(self, hook: str, plugin: str) -> Any:
        """``plugin``'s implementation of ``hook``; its type is the one
        :mod:`~ep_server.plugins.contract` gives that hook, which the facade
        methods above state."""
        return self.by_plugin.get(hook, {}).get(plugin)
