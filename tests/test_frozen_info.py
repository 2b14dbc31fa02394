"""FrozenInfo: a serviceinfo that cannot change, so that its wire encoding
can be made once; how it reads, what it refuses, and where configs make one."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from ep_plugin_docker.config import DockerConfig
from ep_plugin_docker.decide import Site, decide
from ep_plugin_jupyter.config import JupyterConfig
from ep_server import FrozenInfo, Offer, TaskQuery, Verdict
from ep_server.builtins import static
from ep_server.plugins.contract import Malformed, check_verdict
from ep_server.settings_types import ServiceEntry

INFO = {"endpoint": "http://example.org/dkuws", "ports": [80, {"tls": True}], "n": None}


def nested(levels: int) -> dict[str, Any]:
    """A mapping ``levels`` deep (the mapping itself is level 1)."""
    top: dict[str, Any] = {}
    node = top
    for _ in range(levels - 1):
        node["a"] = {}
        node = node["a"]
    return top


def test_it_reads_as_the_mapping_it_was_made_from():
    info = FrozenInfo(INFO)
    assert info["endpoint"] == INFO["endpoint"]
    assert info.get("missing") is None
    assert list(info) == list(INFO)
    assert len(info) == 3
    assert isinstance(info, dict)


def test_nested_mappings_are_frozen_and_lists_become_tuples():
    info = FrozenInfo(INFO)
    assert info["ports"] == (80, FrozenInfo({"tls": True}))
    assert type(info["ports"][1]) is FrozenInfo


def test_it_is_a_copy_that_later_changes_to_its_source_do_not_reach():
    source = {"a": {"b": [1]}}
    info = FrozenInfo(source)
    source["a"]["b"].append(2)
    source["a"]["c"] = 3
    assert info == {"a": {"b": (1,)}}


@pytest.mark.parametrize(
    "change",
    [
        lambda i: i.__setitem__("endpoint", "x"),
        lambda i: i.__delitem__("endpoint"),
        lambda i: i.update(endpoint="x"),
        lambda i: i.setdefault("new", 1),
        lambda i: i.pop("endpoint"),
        lambda i: i.popitem(),
        lambda i: i.clear(),
        lambda i: i.__ior__({"new": 1}),
        lambda i: i["ports"][1].__setitem__("tls", False),
        lambda i: setattr(i, "_encoded", b"junk"),
        lambda i: delattr(i, "_hash"),
    ],
)
def test_every_change_is_refused(change):
    info = FrozenInfo(INFO)
    with pytest.raises(TypeError, match="cannot change"):
        change(info)
    assert info == FrozenInfo(INFO)


def test_calling_init_again_changes_nothing():
    info = FrozenInfo({"a": 1})
    info.__init__({"b": [2]})
    assert info == {"a": 1}


def test_copies_that_may_change_are_plain_dicts():
    info = FrozenInfo(INFO)
    for mutable in (info.copy(), dict(info), info | {"x": 1}):
        assert type(mutable) is dict
        mutable["x"] = 2


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({"when": datetime(2030, 1, 1)}, TypeError, "when is a datetime"),
        ({"a": [1, b"x"]}, TypeError, r"a\[1\] is a bytes"),
        ({"a": {1: "x"}}, TypeError, "a has a key of type int"),
        ({"a": {"b": math.nan}}, ValueError, "a.b is nan"),
        ({"a": [math.inf]}, ValueError, r"a\[0\] is inf"),
        ({"n": 10**400}, ValueError, "n is an integer too large for a JSON number"),
        ({"s": {1, 2}}, TypeError, "s is a set"),
        (nested(33), ValueError, "nests deeper than 32 levels"),
    ],
)
def test_values_that_are_not_json_are_refused_naming_them(value, error, message):
    with pytest.raises(error, match=message):
        FrozenInfo(value)


@pytest.mark.parametrize("levels", [1, 2, 31, 32, 33, 34])
def test_it_takes_exactly_what_the_plugin_contract_takes(levels):
    """Built from a dict or from FrozenInfos nested in one another."""
    plain = nested(levels)
    try:
        check_verdict(Verdict.yes(Offer("uri://s", plain)))
        contract_takes = True
    except Malformed:
        contract_takes = False
    try:
        info = FrozenInfo(plain)
    except ValueError:
        assert not contract_takes
    else:
        assert contract_takes
        check_verdict(Verdict.yes(Offer("uri://s", info)))
    if 1 < levels <= 33:
        inner = FrozenInfo(nested(levels - 1))
        try:
            FrozenInfo({"a": inner})
        except ValueError:
            assert not contract_takes
        else:
            assert contract_takes


def test_list_nesting_counts_as_the_contract_counts_it():
    deep: Any = "leaf"
    for _ in range(31):
        deep = [deep]
    FrozenInfo({"a": deep})  # 32 levels: the mapping and 31 lists
    with pytest.raises(ValueError, match="nests deeper"):
        FrozenInfo({"a": [deep]})


def test_it_is_hashable_and_equal_to_an_equal_mapping():
    info = FrozenInfo(INFO)
    assert hash(info) == hash(FrozenInfo(INFO))
    assert info == FrozenInfo(INFO)
    assert info == {"endpoint": INFO["endpoint"], "ports": (80, {"tls": True}), "n": None}
    assert {info: 1}[FrozenInfo(INFO)] == 1
    assert hash(Offer("uri://s", info)) == hash(Offer("uri://s", FrozenInfo(INFO)))


def test_it_pickles_copies_and_prints():
    info = FrozenInfo(INFO)
    again = pickle.loads(pickle.dumps(info))
    assert again == info
    assert type(again) is FrozenInfo
    assert type(again["ports"][1]) is FrozenInfo
    assert copy.copy(info) is info
    assert copy.deepcopy(info) is info
    assert repr(FrozenInfo({"a": [1]})) == "FrozenInfo({'a': (1,)})"
    offer = Offer("uri://s", info)
    assert dataclasses.replace(offer, message="m").serviceinfo is info
    assert pickle.loads(pickle.dumps(offer)) == offer


def test_a_frozen_info_given_again_is_the_same_object():
    info = FrozenInfo(INFO)
    assert FrozenInfo(info) is info


def test_json_writes_it_as_the_plain_mapping():
    assert json.dumps(FrozenInfo(INFO)) == json.dumps(INFO)
    assert json.loads(json.dumps(FrozenInfo(INFO))) == INFO


def test_the_contract_takes_an_offer_of_one():
    verdict = Verdict.yes(Offer("uri://s", FrozenInfo(INFO)))
    assert check_verdict(verdict) is verdict


# --- where configs make one -----------------------------------------------------


def test_a_service_entry_keeps_its_serviceinfo_frozen():
    entry = ServiceEntry(servicetype="uri://s", serviceinfo=INFO)
    assert type(entry.serviceinfo) is FrozenInfo
    assert entry.serviceinfo == FrozenInfo(INFO)
    assert type(ServiceEntry(servicetype="uri://s").serviceinfo) is FrozenInfo
    assert ServiceEntry(servicetype="uri://s").serviceinfo == {}


def test_a_service_entry_dumps_plain_json_values():
    entry = ServiceEntry(servicetype="uri://s", serviceinfo=INFO)
    assert entry.model_dump() == {"servicetype": "uri://s", "serviceinfo": INFO}
    assert json.loads(entry.model_dump_json())["serviceinfo"] == INFO
    schema = ServiceEntry.model_json_schema()["properties"]["serviceinfo"]
    assert schema["default"] == {}


@pytest.mark.parametrize(
    ("info", "message"), [({"x": math.nan}, "x is nan"), ({"x": {1: 2}}, "x has a key of type int")]
)
def test_a_service_entry_that_is_not_json_is_refused_at_start_up(info, message):
    with pytest.raises(ValidationError, match=message):
        ServiceEntry(servicetype="uri://s", serviceinfo=info)


def test_the_plugins_and_static_claims_store_frozen_serviceinfo(host):
    services = [{"servicetype": "uri://s", "serviceinfo": INFO}]
    for config in (DockerConfig(), JupyterConfig(), DockerConfig(services=services)):
        for service in config.services:
            assert type(service.serviceinfo) is FrozenInfo
    claims = {"claims": [{"tasktype": "uri://t", "servicetype": "uri://s", "serviceinfo": INFO}]}
    [[limits]] = static.ep_configure(claims, host).values()
    assert type(limits.claim.serviceinfo) is FrozenInfo
    assert limits.claim.serviceinfo == FrozenInfo(INFO)


def test_the_docker_plugins_offers_carry_its_configured_serviceinfo_itself(host):
    site = Site.resolve(DockerConfig(), host)
    verdict = decide(TaskQuery("uri://docker-container", {"image": "docker.io/x:1"}), site)
    [offer] = verdict.offers
    assert offer.serviceinfo is site.services[0].serviceinfo
    assert type(offer.serviceinfo) is FrozenInfo
