"""Test helpers for plugin authors: a pytest plugin (entry point ``pytest11``).

With ep-server installed, every pytest run has the ``ep_server`` fixture. It
starts a real, in-process EP on ``127.0.0.1:0`` with the plugins and config
you choose, and hands back a client to ask it::

    def test_my_plugin_says_yes(ep_server):
        ep = ep_server(allow=["myplugin"], config={"plugin": {"myplugin": {"cores": 4}}})
        answer = ep.ask("uri://my-task", {"image": "docker.io/example:1.0"})
        assert answer["responseword"] == "YES"

The server runs on its own event loop in a background thread, so tests need
no asyncio plugin and may be plain functions. Answers are plain dicts in the
protocol's JSON form (``responseword``, ``offers``, ``servicetype``...).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from ep_server.config import Settings
from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import Registry, default_sources, load_registry
from ep_server.wire.plain_json import plain_json

__all__ = ["EPTestServer", "build_registry", "build_settings", "ep_server"]


@dataclass
class _ObjectSource:
    """A plugin object handed in directly, as if found through an entry point."""

    name: str
    plugin: Any

    def load(self) -> Any:
        return self.plugin


def build_settings(config: Mapping[str, Any] | None = None, **server: Any) -> Settings:
    """Settings from a dict shaped like the TOML file (no file, no environment).

    ``server`` keywords override ``[server]`` keys. The server always listens
    on ``127.0.0.1:0`` (a free loopback port) unless ``listen`` is passed here,
    even when ``config`` names another address, and so does its HTTP door; the booking ledger is in
    memory unless ``config`` names one.
    """
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (config or {}).items()}
    data["server"] = {**data.get("server", {}), "listen": "127.0.0.1:0", **server}
    # The HTTP door too listens on a free loopback port.
    data["http"] = {**data.get("http", {}), "listen": "127.0.0.1:0"}
    # A throwaway booking ledger unless the test names a file.
    data["schedule"] = {"ledger": ":memory:", **data.get("schedule", {})}
    return Settings.model_validate(data)


def build_registry(
    settings: Settings,
    plugins: Mapping[str, Any] | None = None,
    *,
    entry_points: bool = True,
) -> Registry:
    """Load plugins as the server does: the installed entry points and
    ``[plugins].modules`` (filtered by ``[plugins].allow``/``block``) unless
    ``entry_points`` is false, plus ``plugins``, a mapping of name to plugin
    object (a module or instance)."""
    sources: list[Any] = default_sources(settings) if entry_points else []
    sources += [_ObjectSource(name, obj) for name, obj in (plugins or {}).items()]
    return load_registry(settings, detect_host(settings.host), sources)


class EPTestServer:
    """A running in-process EP and a client for it."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        from ep_server.server import start_server

        self.settings = settings
        self.registry = registry
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._running = self._run(start_server(settings, registry))
        self.port: int = self._running.port
        self.address = f"127.0.0.1:{self.port}"
        #: The HTTP door's port and base URL (None when ``[http]`` is off).
        self.http_port: int | None = self._running.http_port
        self.http_url = f"http://127.0.0.1:{self.http_port}" if self.http_port else None
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.ExecutionPlannerServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def ask(
        self,
        tasktype: str,
        taskinfo: Mapping[str, Any] | None = None,
        *,
        resources: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Ask, and return the answer in the EP's JSON form for people
        (:mod:`ep_server.wire.plain_json`: ``"cause": "CAPACITY"``, integers
        as numbers), the form ``ep ask --json`` prints."""
        request = {"tasktype": tasktype, "taskinfo": dict(taskinfo or {})}
        if resources is not None:
            request["resources"] = dict(resources)
        return self.ask_json(request, timeout=timeout)

    def ask_json(self, request: Mapping[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
        """Send a request written in the protocol's JSON form."""
        message = json_format.ParseDict(dict(request), pb.AskRequest())
        return _to_dict(self.stub.Ask(message, timeout=timeout))

    def service_info(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """``GetServiceInfo``, in the EP's JSON form for people."""
        return _to_dict(self.stub.GetServiceInfo(pb.GetServiceInfoRequest(), timeout=timeout))

    def close(self) -> None:
        """Stop the server and its loop."""
        self.channel.close()
        try:
            self._run(self._running.shutdown(0))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def _to_dict(message: Any) -> dict[str, Any]:
    return plain_json(message)


#: pytest-asyncio's option whose absence it warns about on every run.
_LOOP_SCOPE = "asyncio_default_fixture_loop_scope"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Spare plugin authors pytest-asyncio's warning about an unset loop scope.

    The fixture needs no asyncio plugin, but one installed beside ep-server
    (its dev extra has it) warns on every run of a project that leaves
    ``asyncio_default_fixture_loop_scope`` unset. Unset, it is set to
    ``"function"``, pytest-asyncio's announced default, before pytest-asyncio
    reads it; a project's own setting is left alone. pytest has no public way
    to set an ini value, so this seeds its ini cache, and does nothing if
    that ever changes."""
    if not config.pluginmanager.hasplugin("asyncio"):
        return
    try:
        if not config.getini(_LOOP_SCOPE):
            config._inicache[_LOOP_SCOPE] = "function"
    except (AttributeError, ValueError, TypeError):  # pytest internals moved
        return


@pytest.fixture
def ep_server() -> Iterator[Callable[..., EPTestServer]]:
    """Factory fixture: ``ep_server(config=None, plugins=None, allow=None,
    entry_points=True, **server_settings)`` starts an EP and returns an
    :class:`EPTestServer`; every server it started stops after the test.

    ``allow`` restricts the installed plugins that load (``[plugins].allow``);
    plugin objects passed in ``plugins`` always load.
    """
    started: list[EPTestServer] = []

    def start(
        config: Mapping[str, Any] | None = None,
        plugins: Mapping[str, Any] | None = None,
        allow: list[str] | None = None,
        entry_points: bool = True,
        **server: Any,
    ) -> EPTestServer:
        config = dict(config or {})
        if allow is not None:
            section = dict(config.get("plugins", {}))
            section["allow"] = [*allow, *(plugins or {})]
            config["plugins"] = section
        settings = build_settings(config, **server)
        registry = build_registry(settings, plugins, entry_points=entry_points)
        started.append(EPTestServer(settings, registry))
        return started[-1]

    yield start
    for server in started:
        server.close()
