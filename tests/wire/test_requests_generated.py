"""Request validation through a real server (ep_server.wire): every generated
``Ask`` gets a verdict or INVALID_ARGUMENT naming the bad fields.

Thousands of generated and adversarial requests (task types, taskinfo with
unicode keys, NaN, non-UTF-8 strings, deep nesting, huge strings, docker- and
jupyter-shaped; absurd resources and time windows; unknown fields) go to a
real in-process EP with the default config and the installed plugins. Each
answer is held to the oracle (request_generation.oracle): the fields it must
name, or the verdict it must give. The server stays healthy throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from request_generation.encoding import Ask
from request_generation.harness import Harness, serving
from request_generation.oracle import (
    CLAIMED,
    KNOWN_GOOD_TASKTYPES,
    MAX_DEPTH,
    MAX_TASKINFO_BYTES,
    expected_violations,
    taskinfo_shape,
)
from request_generation.strategies import (
    DOCKER_TASKINFO,
    HUGE,
    RESOURCES,
    ROBUST,
    SCHEDULES,
    Huge,
    asks,
    deep_values,
)

from ep_server.pb import execution_planner_pb2 as pb


@pytest.fixture(scope="module")
def ep() -> Iterator[Harness]:
    with serving("request validation") as harness:
        yield harness


def test_the_encoder_agrees_with_protobuf():
    """The hand-made wire bytes are what protobuf itself would send."""
    ask = Ask(
        "uri://docker-container",
        {"": None, "\x00": [1.5, True, "é"], "o": {"p": {"q": []}}, "n": -(2**53)},
        {"cores": {"min": -(2**63), "max": 2**63 - 1}, "memory": {"max": 0}},
    )
    parsed = pb.AskRequest.FromString(ask.encode())
    assert parsed.tasktype == ask.tasktype
    assert parsed.taskinfo.ByteSize() == len(ask.taskinfo_bytes())
    assert parsed.taskinfo.fields["\x00"].list_value.values[2].string_value == "é"
    assert parsed.taskinfo.fields["o"].struct_value.fields["p"].struct_value.fields["q"]
    assert (parsed.resources.cores.min, parsed.resources.cores.max) == (-(2**63), 2**63 - 1)
    assert parsed.resources.memory.HasField("max")
    assert not parsed.resources.memory.HasField("min")


def test_generated_asks_get_a_verdict_or_invalid_argument(ep):
    """Random and adversarial task types, taskinfo (unicode keys, NaN,
    non-UTF-8 strings, docker- and jupyter-shaped), resources and unknown
    fields, through the plugins."""

    @settings(ROBUST, max_examples=1500)
    @given(asks())
    def prop(ask: Ask) -> None:
        ep.ask(ask)

    prop()
    ep.assert_healthy()


def test_docker_shaped_asks_are_answered(ep):
    """Docker-container taskinfo in every shape the plugin reads, valid or not,
    always reaches the plugin and gets a verdict naming the plugin."""

    @settings(ROBUST, max_examples=700)
    @given(st.sampled_from(CLAIMED[::2]), DOCKER_TASKINFO, RESOURCES)
    def prop(tasktype: str, taskinfo: dict[str, Any], resources: Any) -> None:
        ask = Ask(tasktype, taskinfo, resources)
        outcome = ep.ask(ask)
        if outcome.response is not None:
            plugins = {o.plugin for o in outcome.response.offers}
            plugins |= {r.plugin for r in outcome.response.reasons}
            assert "docker" in plugins, outcome.response

    prop()
    ep.assert_healthy()


def test_deeply_nested_taskinfo_is_invalid_argument_naming_taskinfo(ep):
    """30 to 210 levels, through objects and lists: past 32 levels the answer
    names ``taskinfo``, even where protobuf's decoder gives up (about 33
    levels) before any handler runs; up to 32 it is judged as usual."""

    @settings(ROBUST, max_examples=400)
    @given(st.sampled_from(CLAIMED), deep_values(28, 210), RESOURCES)
    def prop(tasktype: str, taskinfo: dict[Any, Any], resources: Any) -> None:
        ask = Ask(tasktype, taskinfo, resources)
        # ep.ask holds the oracle: past 32 levels, "taskinfo" must be named.
        ep.ask(ask)
        depth = taskinfo_shape(taskinfo)[0]
        event("deeper than 32" if depth > MAX_DEPTH else "up to 32 levels")

    prop()
    ep.assert_healthy()


def test_huge_taskinfo_is_refused_with_details_not_resource_exhausted(ep):
    """Strings up to ~300 KiB: over the 256 KiB taskinfo limit the answer is
    INVALID_ARGUMENT naming ``taskinfo`` (gRPC's 4 MiB limit sits above it)."""

    @settings(ROBUST, max_examples=150)
    @given(st.sampled_from(CLAIMED), HUGE)
    def prop(tasktype: str, huge: Huge) -> None:
        ask = Ask(tasktype, huge.taskinfo())
        outcome = ep.ask(ask)
        over = len(ask.taskinfo_bytes()) > MAX_TASKINFO_BYTES
        event("over 256 KiB" if over else "within 256 KiB")
        if len(ask.taskinfo_bytes()) > MAX_TASKINFO_BYTES + 64:
            assert "taskinfo" in {f for f, _ in outcome.violations}

    prop()
    ep.assert_healthy()


def test_absurd_resources_and_time_windows(ep):
    """Negative amounts, min > max, int64 extremes: each bad end or range is
    named; sane ones (even 2**63-1 cores) get a verdict. Time windows that end
    before they start, lie outside Timestamp's range, carry invalid nanos or
    negative durations get a verdict or INVALID_ARGUMENT naming schedule.*."""

    @settings(ROBUST, max_examples=600)
    @given(st.sampled_from(KNOWN_GOOD_TASKTYPES), RESOURCES, SCHEDULES)
    def prop(tasktype: str, resources: Any, schedule: Any) -> None:
        taskinfo = {"image": "docker.io/example:1.0"} if "docker" in tasktype else None
        ask = Ask(tasktype, taskinfo, resources, schedule=schedule)
        outcome = ep.ask(ask)
        if outcome.violations and not expected_violations(ask).must_name:
            named = [f for f, _ in outcome.violations]
            assert all(f.startswith("schedule") for f in named), (named, ask)

    prop()
    ep.assert_healthy()
