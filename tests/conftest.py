from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from fake_plugins.common import FakeSource

from ep_server.model import HostInfo
from ep_server.plugins import Registry, load_registry
from ep_server.testing import build_settings

HOST = HostInfo(cores=8, memory=16 * 2**30, architecture="x86_64", os="linux")


@pytest.fixture(autouse=True)
def _private_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server on the default ledger path (under ``$XDG_STATE_HOME``), in
    process or started as a command, keeps its ledger in a folder of the
    test's own: never in the user's home, never beside a server already
    running there (whose lock on that ledger would refuse it); and its HTTP
    door listens on a free port."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    # Servers started as commands open their HTTP door on a free port, not
    # on the default 8080 that a developer's own server may hold.
    monkeypatch.setenv("EP_HTTP__LISTEN", "127.0.0.1:0")


@pytest.fixture
def host() -> HostInfo:
    return HOST


@pytest.fixture
def registry_of() -> Callable[..., Registry]:
    """A fresh registry from plugin objects (name=object), with no entry points."""

    def build(config: Mapping[str, Any] | None = None, **plugins: Any) -> Registry:
        sources = [p if isinstance(p, FakeSource) else FakeSource(n, p) for n, p in plugins.items()]
        return load_registry(build_settings(config), HOST, sources)

    return build
