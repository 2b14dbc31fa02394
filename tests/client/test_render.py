"""The table, the JSON document and the info text: pure.

Text from a site is shown escaped (it cannot break the table or drive the
terminal), and columns are measured in terminal cells, not characters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

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
    cut,
    describe_resources,
    format_bytes,
    info_lines,
    printable,
    results_json,
    table,
    width,
)
from ep_server.model import Cause, HostInfo, Slot

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


def _result(name: str, answer: Answer) -> Result:
    return Result(Site(name, "127.0.0.1:1"), answer)


def test_a_yes_without_offers_keeps_its_row() -> None:
    rows = table([_result("empty", Answer("YES")), _result("no", Answer("NO"))]).splitlines()
    assert len(rows) == 3  # the header, and one row per site
    assert "YES (no offers)" in rows[1]


def test_text_from_a_site_cannot_break_the_table_or_drive_the_terminal() -> None:
    evil = "line1\nline2\ttab \x1b[31mRED\x1b[0m \r overwritten"
    answer = Answer("NO", reasons=(Reason("X", evil),))
    text = table([_result("site", answer)])
    assert "\x1b" not in text
    assert "\r" not in text
    assert "\t" not in text
    assert len(text.splitlines()) == 2
    assert "line1\\x0aline2\\x09tab \\x1b[31mRED" in text


def test_wide_characters_keep_the_columns_aligned() -> None:
    text = table([_result("東京", Answer("NO")), _result("ab", Answer("NO"))])
    _header, tokyo, ab = text.splitlines()
    # "NO" starts in the same terminal column on both rows (東京 is 4 columns wide)
    assert tokyo.index("NO") + 2 == ab.index("NO")


def test_json_gives_the_earliest_slot_of_a_reason() -> None:
    start = datetime(2031, 3, 5, 9, tzinfo=UTC)
    reason = Reason("NO_SLOT", "later", earliest_slot=Slot(start, start + timedelta(hours=2)))
    doc = json.loads(results_json([_result("s", Answer("NO", reasons=(reason,)))]))
    slot = doc["results"][0]["answer"]["reasons"][0]["earliest_slot"]
    assert slot == {"start": "2031-03-05T09:00:00Z", "end": "2031-03-05T11:00:00Z"}


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("abc", 3),
        ("東京", 4),
        ("\u0e01\u0e31", 1),  # Thai consonant + vowel mark (combining class 0)
        ("e\u0301", 1),  # e + combining acute
        ("\u1100\u1161\u11a8", 2),  # Hangul syllable from conjoining jamo
        ("a\ufe0fb", 2),  # a variation selector takes no column
    ],
)
def test_width_counts_terminal_columns(text: str, columns: int) -> None:
    assert width(text) == columns


def test_cut_shortens_by_terminal_columns_not_characters() -> None:
    """The progress line is cut this way to fit the terminal."""
    assert cut("東京東京東京", 7) == "東京..."
    assert width(cut("東京" * 50, 20)) <= 20
    assert cut("short", 20) == "short"


def test_printable_escapes_invisible_tag_characters() -> None:
    assert printable("\U000e0001") == "\\U000e0001"
