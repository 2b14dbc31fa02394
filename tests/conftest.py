from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from fake_plugins.common import FakeSource

from ep_server.model import HostInfo
from ep_server.plugins import Registry, load_registry
from ep_server.testing import build_settings

HOST = HostInfo(cores=8, memory=16 * 2**30, architecture="x86_64", os="linux")


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
