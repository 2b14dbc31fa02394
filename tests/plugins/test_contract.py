"""What each hook must return: results held to the contract."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from types import MappingProxyType

import pytest

from ep_server import Cause, FrozenInfo, IntRange, Offer, Reason, Resources, Verdict
from ep_server.plugins.contract import (
    _MAX_JSON_DEPTH,
    HOOKS,
    MAX_OFFERS_PER_PLUGIN,
    MAX_REASONS_PER_PLUGIN,
    Malformed,
    _json_ok,
    _not_json,
    check_need,
    check_refusals,
    check_slot,
    check_verdict,
)

NOPE = Reason("NOPE", "never", Cause.POLICY)


def test_every_hook_called_while_serving_has_a_contract():
    from ep_server import hookspecs

    specs = {name for name in dir(hookspecs) if name.startswith("ep_")}
    assert set(HOOKS) == specs - {"ep_configure", "ep_claims"}


def test_a_verdict_with_too_many_offers_and_reasons_is_capped():
    many = Verdict(
        tuple(Offer(f"uri://s{i}") for i in range(30)),
        tuple(Reason(f"R{i}", "r") for i in range(30)),
    )
    capped = check_verdict(many, "p")
    assert len(capped.offers) == MAX_OFFERS_PER_PLUGIN
    assert len(capped.reasons) == MAX_REASONS_PER_PLUGIN
    assert capped.reasons[-1].code == "MORE_REASONS"
    assert capped.reasons[-1].message == "and 11 more reasons"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "returned NoneType, not a Verdict"),
        (Verdict(), "declined without giving a reason"),
        (Verdict.no(Reason(7, "x")), "fields of the wrong type"),  # type: ignore[arg-type]
    ],
)
def test_a_verdict_outside_the_contract_is_malformed(value, problem):
    with pytest.raises(Malformed, match=problem):
        check_verdict(value)


@pytest.mark.parametrize(
    ("serviceinfo", "problem"),
    [
        ({"when": datetime(2030, 1, 1)}, "serviceinfo.when is a datetime"),
        ({"ports": [1, {"n": float("nan")}]}, r"serviceinfo.ports\[1\].n is nan"),
        ({"a": {1: "x"}}, "serviceinfo.a has a key of type int"),
        ({"raw": b"\x00"}, "serviceinfo.raw is a bytes"),
    ],
)
def test_an_offer_whose_serviceinfo_is_not_json_is_malformed(serviceinfo, problem):
    with pytest.raises(Malformed, match=problem):
        check_verdict(Verdict.yes(Offer("uri://s", serviceinfo)))


def test_a_serviceinfo_of_nested_json_values_is_well_formed():
    info = {"endpoint": "x", "ports": [1, 2.5, True, None], "env": {"A": {"B": ["c"]}}}
    assert check_verdict(Verdict.yes(Offer("uri://s", info))).offers[0].serviceinfo == info


@pytest.mark.parametrize(
    ("value", "reasons"),
    [(None, ()), (NOPE, (NOPE,)), ([NOPE, NOPE], (NOPE, NOPE)), ((r for r in [NOPE]), (NOPE,))],
    ids=["none", "one", "list", "generator"],
)
def test_a_policy_allows_with_none_and_refuses_with_reasons(value, reasons):
    assert check_refusals(value) == reasons


@pytest.mark.parametrize("value", ["NOPE", {"code": "X"}, [NOPE, "x"], 3, [Reason(1, "m")]])
def test_a_policy_result_that_is_not_reasons_is_malformed(value):
    with pytest.raises(Malformed, match="ep_policy must return None, a Reason or Reasons"):
        check_refusals(value)


def test_a_need_maps_pools_to_non_negative_ints():
    assert check_need(None) is None
    assert check_need({"cores": 2, "gpus": 0}) == {"cores": 2, "gpus": 0}
    for bad in ({"cores": -1}, {"cores": 1.5}, {"cores": True}, {3: 1}, [("cores", 1)]):
        with pytest.raises(Malformed):
            check_need(bad)


def test_a_slot_answer_is_a_reason_or_none():
    assert check_slot(None) is None
    assert check_slot(NOPE) is NOPE
    with pytest.raises(Malformed, match="ep_slot returned bool"):
        check_slot(True)


def _nested(depth: int, inner: object) -> object:
    value = inner
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def _dicts(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


class _Text(str):
    pass


class _Count(int):
    pass


_SERVICEINFOS = [
    {},
    {"a": "x", "b": 1, "c": True, "d": None, "e": 2.5},
    {"a": float("inf")},
    {"a": -float("inf")},
    {"a": [1, (2, 3), {"b": [None]}]},
    {"a": {1: "x"}},
    {_Text("a"): _Text("b"), "n": _Count(3)},
    {"a": {"b": _Count(1)}},
    {"a": b"x"},
    {"a": {1, 2}},
    {"a": datetime(2030, 1, 1)},
    {"a": OrderedDict(b=[1])},
    {"a": MappingProxyType({"b": 1})},
    {"a": MappingProxyType({2: 1})},
    {"a": _nested(30, 1)},
    {"a": _nested(30, [])},
    {"a": _nested(31, [])},
    {"a": _nested(31, "x")},
    {"a": _nested(32, "x")},
    {"a": _nested(33, 1)},
    {"a": _nested(31, float("nan"))},
    {"a": _nested(30, {})},
    {"a": _nested(31, {})},
    {"a": _nested(31, {"b": 1})},
    _dicts(31),
    _dicts(32),
    _dicts(33),
    OrderedDict(a=1),
    MappingProxyType({"a": [1.0]}),
]


@pytest.mark.parametrize("serviceinfo", _SERVICEINFOS, ids=range(len(_SERVICEINFOS)))
def test_the_quick_serviceinfo_check_agrees_with_the_one_that_names_the_problem(serviceinfo):
    quick = _json_ok(serviceinfo, _MAX_JSON_DEPTH)
    problem = _not_json(serviceinfo, "serviceinfo", _MAX_JSON_DEPTH)
    assert quick == (not problem), problem
    offer = Verdict.yes(Offer("uri://s", serviceinfo))
    if quick:
        assert check_verdict(offer) is offer
    else:
        with pytest.raises(Malformed, match="serviceinfo is not JSON"):
            check_verdict(offer)


def _frozen(serviceinfo: object) -> FrozenInfo | None:
    try:
        return FrozenInfo(serviceinfo)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


_FROZEN = [f for f in map(_frozen, _SERVICEINFOS) if f is not None]


@pytest.mark.parametrize("serviceinfo", _FROZEN, ids=range(len(_FROZEN)))
@pytest.mark.parametrize("depth", [_MAX_JSON_DEPTH, 3, 2, 1, 0])
def test_the_quick_check_of_a_frozen_info_agrees_with_the_one_that_names_the_problem(
    serviceinfo, depth
):
    assert _json_ok(serviceinfo, depth) == (not _not_json(serviceinfo, "serviceinfo", depth))


@pytest.mark.parametrize(
    "offer",
    [
        Offer("uri://s", {}, Resources(IntRange(1, 2**63))),
        Offer("uri://s", {}, Resources(memory=IntRange(True))),  # type: ignore[arg-type]
        Offer("uri://s", {}, Resources(memory=IntRange(None, -1))),
        Offer("uri://s", {}, "lots"),  # type: ignore[arg-type]
        Offer(7, {}),  # type: ignore[arg-type]
    ],
    ids=["cores-too-many", "memory-bool", "memory-negative", "resources-str", "servicetype-int"],
)
def test_an_offer_with_a_field_of_the_wrong_type_is_malformed(offer):
    with pytest.raises(Malformed, match="fields of the wrong type"):
        check_verdict(Verdict.yes(offer))


def test_an_offer_with_open_and_int64_ranges_is_well_formed():
    offer = Offer("uri://s", {}, Resources(IntRange(0, 2**63 - 1), IntRange(None, 5)))
    verdict = Verdict(offers=(offer,), reasons=(NOPE,))
    assert check_verdict(verdict) is verdict
