"""Loading plugins: discovery, isolation, configuration, the claim index."""

from __future__ import annotations

import importlib.metadata

import pytest
from fake_plugins.common import Configured, Dist, FakeSource, Offering
from pydantic import BaseModel, ConfigDict

from ep_server import Claim, PluginConfigError, Verdict, hookimpl
from ep_server.errors import StartupError
from ep_server.plugins import PluginState, load_registry
from ep_server.testing import build_settings

DOCKER = "uri://docker-container"


def test_builtin_static_plugin_is_found_through_the_entry_point_group():
    eps = importlib.metadata.entry_points(group="ep_server")
    static = [ep for ep in eps if ep.name == "static"]
    assert [ep.value for ep in static] == ["ep_server.builtins.static"]
    assert static[0].dist.name == "ep-server"


def test_default_registry_loads_static_with_its_distribution(host):
    registry = load_registry(build_settings({"plugins": {"allow": ["static"]}}), host)
    [record] = registry.loaded
    assert (record.name, record.distribution) == ("static", "ep-server")
    assert record.version == importlib.metadata.version("ep-server")


def test_claims_are_many_to_many(registry_of):
    a = Offering("uri://docker-uws", DOCKER, "uri://podman-container")
    b = Offering("uri://rosetta-rest-api", DOCKER)
    registry = registry_of(a=a, b=b)
    assert [c.plugin for c in registry.ep_evaluate(DOCKER)] == ["a", "b"]
    assert [c.plugin for c in registry.ep_evaluate("uri://podman-container")] == ["a"]
    assert registry.ep_evaluate("uri://unknown") == ()


def test_a_plugin_that_fails_to_import_is_recorded_and_skipped(registry_of, caplog):
    broken = FakeSource(
        "broken",
        error=ImportError("No module named 'numpyy'"),
        dist=Dist("ep-plugin-broken", "1.2"),
    )
    registry = registry_of(broken=broken, good=Offering("uri://docker-uws", DOCKER))
    by_name = {r.name: r for r in registry.records}
    assert by_name["broken"].state is PluginState.FAILED
    assert "numpyy" in by_name["broken"].error
    assert (by_name["broken"].distribution, by_name["broken"].version) == (
        "ep-plugin-broken",
        "1.2",
    )
    assert by_name["good"].state is PluginState.LOADED
    assert "broken" in caplog.text
    assert "numpyy" in caplog.text


def test_a_hookimpl_with_a_wrong_signature_fails_registration(registry_of):
    class WrongArgs:
        @hookimpl
        def ep_evaluate(self, query, colour):  # 'colour' is no argument of the spec
            return Verdict()

    registry = registry_of(wrong=WrongArgs())
    [record] = registry.records
    assert record.state is PluginState.FAILED
    assert "registration failed" in record.error
    assert "colour" in record.error


def test_a_misspelled_hook_is_an_error_not_ignored(registry_of):
    class Typo:
        @hookimpl
        def ep_evalute(self, query):
            return Verdict()

    [record] = registry_of(typo=Typo()).records
    assert record.state is PluginState.FAILED
    assert "ep_evalute" in record.error


def test_claims_without_evaluate_fail_the_plugin(registry_of):
    class ClaimsOnly:
        @hookimpl
        def ep_claims(self):
            return [Claim(DOCKER)]

    registry = registry_of(lazy=ClaimsOnly())
    assert registry.records[0].state is PluginState.FAILED
    assert "ep_evaluate" in registry.records[0].error
    assert registry.ep_evaluate(DOCKER) == ()


@pytest.mark.parametrize(
    "claims",
    [[Claim("not a uri")], ["uri://just-a-string"], [Claim(DOCKER, ("bad service",))], 42],
    ids=["bad-tasktype", "not-a-claim", "bad-servicetype", "not-iterable"],
)
def test_invalid_claims_fail_the_plugin(registry_of, claims):
    class Odd:
        @hookimpl
        def ep_claims(self):
            return claims

        @hookimpl
        def ep_evaluate(self):
            return Verdict()

    registry = registry_of(odd=Odd(), good=Offering("uri://docker-uws", DOCKER))
    assert registry.records[1].state is PluginState.FAILED
    assert [c.plugin for c in registry.ep_evaluate(DOCKER)] == ["good"]


def test_blocked_plugins_are_never_imported(registry_of):
    source = FakeSource("blocked", Offering("uri://x", DOCKER))
    registry = registry_of({"plugins": {"block": ["blocked"]}}, blocked=source)
    assert registry.records[0].state is PluginState.BLOCKED
    assert source.loads == 0


def test_the_allow_list_blocks_everything_else(registry_of):
    registry = registry_of(
        {"plugins": {"allow": ["b"]}}, a=Offering("uri://x", DOCKER), b=Offering("uri://y", DOCKER)
    )
    assert {r.name: r.state for r in registry.records} == {
        "a": PluginState.BLOCKED,
        "b": PluginState.LOADED,
    }


def test_duplicate_plugin_names_keep_the_first(registry_of, host):
    first = FakeSource("dup", Offering("uri://one", DOCKER), dist=Dist("dist-one", "1"))
    second = FakeSource("dup", Offering("uri://two", DOCKER), dist=Dist("dist-two", "1"))
    registry = load_registry(build_settings(), host, [first, second])
    assert [r.state for r in registry.records] == [PluginState.LOADED, PluginState.FAILED]
    assert "dist-one" in registry.records[1].error


def test_each_plugin_gets_its_own_config_section(registry_of):
    one, two = Configured(), Configured()
    registry = registry_of({"plugin": {"one": {"word": "hello"}}}, one=one, two=two)
    assert one.seen == [{"word": "hello"}]
    assert two.seen == [{}]
    assert set(registry.index) == {"uri://configured-hello", "uri://configured-default"}


def test_a_plugin_config_error_stops_startup_naming_plugin_and_key(registry_of):
    class Strict:
        @hookimpl
        def ep_configure(self, settings):
            raise PluginConfigError("limits.cores", "must be positive")

    with pytest.raises(StartupError, match=r"plugin\.strict\.limits\.cores: must be positive"):
        registry_of(strict=Strict())


def test_a_pydantic_validation_error_names_the_key(registry_of):
    class Model(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cores: int

    class Validating:
        @hookimpl
        def ep_configure(self, settings):
            return Model.model_validate(settings)

    with pytest.raises(StartupError) as info:
        registry_of({"plugin": {"v": {"cores": "many", "colour": 1}}}, v=Validating())
    assert "plugin.v.cores:" in str(info.value)
    assert "plugin.v.colour:" in str(info.value)


def test_a_crash_in_configure_fails_only_that_plugin(registry_of):
    class Crashing:
        @hookimpl
        def ep_configure(self):
            raise RuntimeError("cannot read /etc/thing")

    registry = registry_of(crash=Crashing(), good=Offering("uri://docker-uws", DOCKER))
    states = {r.name: (r.state, r.error) for r in registry.records}
    assert states["crash"][0] is PluginState.FAILED
    assert "cannot read /etc/thing" in states["crash"][1]
    assert states["good"] == (PluginState.LOADED, "")


def test_a_fallback_claim_yields_to_a_regular_one(registry_of):
    registry = registry_of(
        fallback=Offering("uri://docker-uws", DOCKER, "uri://only-fallback", fallback=True),
        special=Offering("uri://docker-special", DOCKER),
    )
    assert [c.plugin for c in registry.ep_evaluate(DOCKER)] == ["special"]
    assert [c.plugin for c in registry.ep_evaluate("uri://only-fallback")] == ["fallback"]
    fallback = next(r for r in registry.records if r.name == "fallback")
    assert [c.tasktype for c in fallback.claims] == ["uri://only-fallback"]


def test_two_fallbacks_on_one_tasktype_both_stand(registry_of):
    registry = registry_of(
        a=Offering("uri://a", DOCKER, fallback=True), b=Offering("uri://b", DOCKER, fallback=True)
    )
    assert [c.plugin for c in registry.ep_evaluate(DOCKER)] == ["a", "b"]


def test_static_plugin_config_errors_name_the_key(host):
    bad = {
        "plugin": {
            "static": {"claims": [{"tasktype": "no uri", "servicetype": "uri://x", "cores": 0}]}
        }
    }
    with pytest.raises(StartupError) as info:
        load_registry(build_settings({**bad, "plugins": {"allow": ["static"]}}), host)
    assert "plugin.static.claims.0.tasktype:" in str(info.value)
    assert "plugin.static.claims.0.cores:" in str(info.value)


def test_plugin_modules_are_named_like_entry_points(host):
    modules = ["slow=fake_plugins.slow", "one=fake_plugins.synthetic:P00", "fake_plugins.common"]
    registry = load_registry(build_settings({"plugins": {"modules": modules}}), host, None)
    states = {r.name: r.state for r in registry.records}
    assert states["slow"] is PluginState.LOADED
    assert states["one"] is PluginState.LOADED
    # A module with no hooks registers, claims nothing, and is harmless.
    assert states["fake_plugins.common"] is PluginState.LOADED
    assert [c.plugin for c in registry.ep_evaluate("uri://bench-task")] == ["one"]
