"""Plugins: loading them, the registry of what loaded, and calling them.

- :mod:`~ep_server.plugins.loading`: discovery, isolation, configuration
  (:func:`load_registry`);
- :mod:`~ep_server.plugins.registry`: the frozen :class:`Registry`, with one
  method per hook;
- :mod:`~ep_server.plugins.contract`: what each hook is given and must give
  back;
- :mod:`~ep_server.plugins.caller`: the one way every hook is called while
  serving (:class:`PluginCaller`).
"""

from __future__ import annotations

from ep_server.plugins.caller import Outcome, PluginCaller, Status
from ep_server.plugins.loading import ENTRY_POINT_GROUP, default_sources, load_registry
from ep_server.plugins.registry import Impl, PluginRecord, PluginState, Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "Impl",
    "Outcome",
    "PluginCaller",
    "PluginRecord",
    "PluginState",
    "Registry",
    "Status",
    "default_sources",
    "load_registry",
]
