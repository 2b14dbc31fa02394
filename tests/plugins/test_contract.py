"""What each hook must return: results held to the contract."""

from __future__ import annotations

from datetime import datetime

import pytest

from ep_server import Cause, Offer, Reason, Verdict
from ep_server.plugins.contract import (
    HOOKS,
    MAX_OFFERS_PER_PLUGIN,
    MAX_REASONS_PER_PLUGIN,
    Malformed,
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
