"""The one resource-fitting rule, at and around the limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ep_server import Cause, Fit, IntRange, Limit, Resources, fit_range, fit_resources
from ep_server.fitting import INSUFFICIENT_CORES, INSUFFICIENT_MEMORY

GiB = 1024**3
FOUR = Limit(4, "this host's cores")


@pytest.mark.parametrize(
    ("asked", "offered"),
    [
        (IntRange(), IntRange(None, 4)),
        (IntRange(4, None), IntRange(4, 4)),
        (IntRange(1, 4), IntRange(1, 4)),
        (IntRange(None, 3), IntRange(None, 3)),
    ],
)
def test_within_the_limit_nothing_to_say(asked: IntRange, offered: IntRange) -> None:
    fit = fit_range(asked, FOUR, "cores")
    assert (fit.offered, fit.note, fit.reason) == (offered, "", None)


def test_an_open_maximum_is_offered_up_to_the_limit_without_a_note() -> None:
    fit = fit_range(IntRange(2, None), Limit(8 * GiB), "memory")
    assert (fit.offered, fit.note, fit.reason) == (IntRange(2, 8 * GiB), "", None)


def test_a_maximum_above_the_limit_is_capped() -> None:
    fit = fit_range(IntRange(2, 5), FOUR, "cores")
    assert fit.offered == IntRange(2, 4)
    assert fit.note == "cores capped at 4 (this host's cores)"
    assert fit.reason is None


def test_a_limit_without_a_source_is_the_limit() -> None:
    assert fit_range(IntRange(1, 9), Limit(4), "cores").note == "cores capped at the limit of 4"
    memory = fit_range(IntRange(None, 2 * GiB), GiB, "memory")
    assert memory.note == f"memory capped at the limit of {GiB} bytes"


def test_a_minimum_above_the_limit_is_a_capacity_reason() -> None:
    fit = fit_range(IntRange(5, None), FOUR, "cores")
    assert fit.reason is not None
    assert (fit.reason.code, fit.reason.cause, fit.reason.field) == (
        "INSUFFICIENT_CORES",
        Cause.CAPACITY,
        "resources.cores.min",
    )
    assert "at least 5" in fit.reason.message
    assert "at most 4" in fit.reason.message


def test_the_caller_words_the_refusal() -> None:
    fit = fit_range(IntRange(5, None), FOUR, "cores", gets="a notebook here gets")
    assert fit.reason is not None
    assert fit.reason.message == (
        "asked for at least 5 of cores; a notebook here gets at most 4 (this host's cores)"
    )
    plain = fit_range(IntRange(GiB + 1, None), GiB, "memory")
    assert plain.reason is not None
    assert plain.reason.message == (
        f"asked for at least {GiB + 1} bytes of memory; a task here gets at most {GiB} bytes"
    )
    assert not plain.reason.retryable


def test_no_limit_offers_what_was_asked() -> None:
    fit = fit_range(IntRange(1, 10**6), Limit(None), "memory")
    assert (fit.offered, fit.note, fit.reason) == (IntRange(1, 10**6), "", None)
    assert fit_range(IntRange(), None, "cores").offered == IntRange()


def test_a_host_amount_of_zero_is_no_limit() -> None:
    assert Limit.host(0, "this host's memory") == Limit(None, "this host's memory")
    assert Limit.host(8) == Limit(8)
    assert fit_range(IntRange(GiB, None), Limit.host(0), "memory").offered == IntRange(GiB, None)


def test_both_resources_report_together() -> None:
    asked = Resources(IntRange(8, None), IntRange(9 * GiB, None))
    fit = fit_resources(asked, cores=4, memory=Limit(8 * GiB))
    assert [r.field for r in fit.reasons] == ["resources.cores.min", "resources.memory.min"]
    assert [r.code for r in fit.reasons] == [INSUFFICIENT_CORES, INSUFFICIENT_MEMORY]


def test_both_resources_capped_with_notes_in_one_message() -> None:
    fit = fit_resources(Resources(IntRange(1, 16), IntRange(GiB, 4 * GiB)), cores=4, memory=GiB)
    assert fit == Fit(
        Resources(IntRange(1, 4), IntRange(GiB, GiB)),
        ("cores capped at the limit of 4", f"memory capped at the limit of {GiB} bytes"),
    )
    assert fit.message == "; ".join(fit.notes)


def test_with_no_limits_the_request_is_offered_as_asked() -> None:
    asked = Resources(IntRange(1, None), IntRange(None, GiB))
    assert fit_resources(asked) == Fit(asked)
    assert fit_resources(asked).message == ""


_ENDS = st.none() | st.integers(0, 64)


@given(low=_ENDS, high=_ENDS, limit=st.integers(0, 64))
def test_the_rule(low: int | None, high: int | None, limit: int) -> None:
    if low is not None and high is not None and low > high:
        low, high = high, low
    fit = fit_range(IntRange(low, high), limit, "cores")
    if low is not None and low > limit:
        assert fit.reason is not None
        assert fit.offered == IntRange(low, high)
        return
    assert fit.reason is None
    assert fit.offered == IntRange(low, limit if high is None else min(high, limit))
    assert bool(fit.note) == (high is not None and high > limit)
