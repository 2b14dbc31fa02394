"""The table, the JSON document and the info text: pure."""

from __future__ import annotations

import json

import grpc
import pytest

from ep_server.client import (
    Answer,
    Failure,
    FailureKind,
    IntRange,
    Offer,
    Reason,
    Resources,
    Result,
    ServiceInfo,
    ServiceType,
    Site,
    TaskTypeInfo,
    candidates,
    rank,
)
from ep_server.client.render import (
    describe_resources,
    format_bytes,
    info_lines,
    results_json,
    table,
)
from ep_server.model import Cause, HostInfo

GiB = 2**30


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (16 * GiB, "16GiB")]
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("resources", "text"),
    [
        (None, "-"),
        (Resources(), "-"),
        (Resources(IntRange(4, 16), IntRange(8 * GiB, 8 * GiB)), "cores 4-16, memory 8GiB"),
        (Resources(IntRange(2, None)), "cores 2+"),
        (Resources(memory=IntRange(None, GiB)), "memory <=1GiB"),
    ],
)
def test_describe_resources(resources: Resources | None, text: str) -> None:
    assert describe_resources(resources) == text


def sample() -> list[Result]:
    uws = Offer("uri://uws", {"endpoint": "http://a/uws"}, Resources(IntRange(None, 4)), "p")
    other = Offer("uri://other", {"queue": "q"})
    big = Offer("uri://uws", {"endpoint": "http://b/uws"}, Resources(IntRange(None, 8)), "p")
    reason = Reason("INSUFFICIENT_CORES", "too few", "p", Cause.CAPACITY, False, "resources.cores")
    return [
        Result(Site("a", "a:1"), Answer("YES", (uws, other)), 0.01),
        Result(Site("b", "b:1"), Answer("YES", (big,)), 0.02),
        Result(Site("c", "c:1"), Answer("NO", (), (reason,)), 0.03),
        Result(
            Site("d", "d:1"),
            Failure(FailureKind.DEADLINE_EXCEEDED, "late", grpc.StatusCode.DEADLINE_EXCEEDED),
        ),
    ]


def test_table_lists_ranked_offers_first_then_the_rest() -> None:
    results = sample()
    ranking = rank(candidates(results, ["uri://uws"]))
    rows = [line.split() for line in table(results, ranking).splitlines()]
    assert [row[:3] for row in rows[1:3]] == [["1", "b", "YES"], ["2", "a", "YES"]]
    assert rows[3][:4] == ["a", "YES", "(not", "accepted)"]
    assert '{"queue":"q"}' in rows[3]
    assert rows[4][:2] == ["c", "NO"]
    assert "INSUFFICIENT_CORES:" in rows[4]
    assert rows[5][:3] == ["d", "FAILED", "-"]
    assert "[DEADLINE_EXCEEDED]:" in rows[5]


def test_table_columns_line_up() -> None:
    lines = table(sample()).splitlines()
    start = lines[0].index("SERVICE TYPE")
    assert all(line[start - 2 : start] == "  " for line in lines)


def test_json_document() -> None:
    results = sample()
    ranking = rank(candidates(results, ["uri://uws"]))
    doc = json.loads(results_json(results, ranking))
    assert [c["site"] for c in doc["ranking"]] == ["b", "a"]
    assert doc["chosen"]["serviceinfo"] == {"endpoint": "http://b/uws"}
    assert doc["results"][2]["answer"]["reasons"][0] == {
        "code": "INSUFFICIENT_CORES",
        "message": "too few",
        "plugin": "p",
        "cause": "CAPACITY",
        "retryable": False,
        "field": "resources.cores",
        "earliest_slot": None,
    }
    assert doc["results"][3]["failure"] == {
        "kind": "DEADLINE_EXCEEDED",
        "code": "DEADLINE_EXCEEDED",
        "message": "late",
        "attempts": 1,
    }
    assert json.loads(results_json(results))["chosen"] is None


def test_info_lines() -> None:
    info = ServiceInfo(
        "1.2.3",
        HostInfo(8, 16 * GiB, "x86_64", "linux"),
        (TaskTypeInfo("uri://t", (ServiceType("uri://s", "p"),)),),
    )
    assert info_lines("h:1", info).splitlines() == [
        "EP at h:1: ep-server 1.2.3",
        "capacity: 8 cores, 16GiB memory, linux/x86_64",
        "task types:",
        "  uri://t",
        "    -> uri://s (plugin p)",
        "plugins: none",
    ]
