"""Resource fit at and around the limits."""

from __future__ import annotations

import pytest

from ep_plugin_jupyter.resources import Limit, ResourceLimits, fit_range, fit_resources
from ep_server import Cause, HostInfo, IntRange, Resources

GiB = 1024**3
FOUR = Limit(4, "this host's cores")


def host(cores: int = 8, memory: int = 16 * GiB) -> HostInfo:
    return HostInfo(cores=cores, memory=memory, architecture="x86_64", os="linux")


def test_limits_take_the_tighter_of_host_and_config() -> None:
    limits = ResourceLimits.of(host(), max_cores=4, max_memory=32 * GiB)
    assert limits.cores == Limit(4, "the per-task limit of cores")
    assert limits.memory == Limit(16 * GiB, "this host's memory")
    assert ResourceLimits.of(host(), None, None).cores == Limit(8, "this host's cores")


def test_unknown_host_memory_leaves_only_the_config_limit() -> None:
    assert ResourceLimits.of(host(memory=0), None, None).memory.value is None
    assert ResourceLimits.of(host(memory=0), None, GiB).memory.value == GiB


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


def test_a_maximum_above_the_limit_is_capped() -> None:
    fit = fit_range(IntRange(2, 5), FOUR, "cores")
    assert fit.offered == IntRange(2, 4)
    assert fit.note == "cores capped at 4 (this host's cores)"
    assert fit.reason is None


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


def test_no_limit_offers_what_was_asked() -> None:
    fit = fit_range(IntRange(1, 10**6), Limit(None), "memory")
    assert (fit.offered, fit.note, fit.reason) == (IntRange(1, 10**6), "", None)


def test_both_resources_report_together() -> None:
    limits = ResourceLimits.of(host(cores=4, memory=8 * GiB), None, None)
    asked = Resources(IntRange(8, None), IntRange(9 * GiB, None))
    fit = fit_resources(asked, limits)
    assert [r.field for r in fit.reasons] == ["resources.cores.min", "resources.memory.min"]
    assert fit.reasons[1].code == "INSUFFICIENT_MEMORY"


def test_both_resources_capped_with_notes() -> None:
    limits = ResourceLimits.of(host(cores=4, memory=8 * GiB), None, 2 * GiB)
    fit = fit_resources(Resources(IntRange(1, 16), IntRange(GiB, 4 * GiB)), limits)
    assert fit.resources == Resources(IntRange(1, 4), IntRange(GiB, 2 * GiB))
    assert fit.notes == (
        "cores capped at 4 (this host's cores)",
        f"memory capped at {2 * GiB} bytes (the per-task limit of memory)",
    )
    assert fit.reasons == ()
