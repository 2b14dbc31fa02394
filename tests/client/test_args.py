"""``ep`` argument parsing: pure, no gRPC.

A value the EP could not use (absurd numbers, a taskinfo no site would take)
is a usage error, exit status 2 with a message and no traceback; the tests of
that go through ``main`` to see the exit status and the output.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from ep_server.client.args import (
    DEFAULT_DEADLINE,
    UsageError,
    address_from_args,
    apply_sets,
    build_parser,
    cores_arg,
    memory_arg,
    query_from_args,
    set_arg,
    taskinfo_arg,
    window_arg,
)
from ep_server.client.cli import main
from ep_server.model import IntRange, Resources, TaskQuery

GiB = 2**30


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["ask", "--tasktype", "uri://t", *argv])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", IntRange(4, None)),
        ("4:16", IntRange(4, 16)),
        ("4:", IntRange(4)),
        (":8", IntRange(None, 8)),
    ],
)
def test_cores(text: str, expected: IntRange) -> None:
    assert cores_arg(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8:4", "MIN is greater than MAX"),
        ("x", "not a whole number"),
        (":", "expected MIN"),
        ("-1", "not"),
    ],
)
def test_bad_cores(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        cores_arg(text)


def test_memory() -> None:
    assert memory_arg("8GiB:16GiB") == IntRange(8 * GiB, 16 * GiB)
    assert memory_arg("512MB") == IntRange(512_000_000, None)
    with pytest.raises(argparse.ArgumentTypeError, match="not a byte count"):
        memory_arg("8Gx")


def test_taskinfo_json_and_file(tmp_path: Path) -> None:
    assert taskinfo_arg('{"image": "x", "n": 2}') == {"image": "x", "n": 2}
    path = tmp_path / "ti.json"
    path.write_text(json.dumps({"a": {"b": [1]}}), encoding="utf-8")
    assert taskinfo_arg(f"@{path}") == {"a": {"b": [1]}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{bad", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("@/nonexistent/x.json", "cannot read"),
    ],
)
def test_bad_taskinfo(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        taskinfo_arg(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image=docker.io/x:1.0", (["image"], "docker.io/x:1.0")),
        ("n=4", (["n"], 4)),
        ("on=true", (["on"], True)),
        ("a.b.c=[1]", (["a", "b", "c"], [1])),
        ("s=", (["s"], "")),
        ('q="4"', (["q"], "4")),
    ],
)
def test_set(text: str, expected: tuple[list[str], object]) -> None:
    assert set_arg(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=1", "a..b=1", ".a=1"])
def test_bad_set(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        set_arg(text)


def test_sets_nest_and_override() -> None:
    base = {"image": "old", "env": {"A": "1"}}
    sets = [(["image"], "new"), (["env", "B"], 2), (["x", "y", "z"], None)]
    assert apply_sets(base, sets) == {
        "image": "new",
        "env": {"A": "1", "B": 2},
        "x": {"y": {"z": None}},
    }


def test_set_through_a_non_object_is_an_error() -> None:
    with pytest.raises(UsageError, match=r"--set image\.tag: image is already set, not an object"):
        apply_sets({"image": "x"}, [(["image", "tag"], "1")])


def test_query_from_args() -> None:
    args = parse(
        "--taskinfo", '{"image": "x"}', "--set", "env.A=1", "--cores", "2:4", "--memory", "1GiB"
    )
    assert query_from_args(args) == TaskQuery(
        "uri://t",
        {"image": "x", "env": {"A": 1}},
        Resources(IntRange(2, 4), IntRange(GiB, None)),
    )


def test_defaults() -> None:
    args = parse("--endpoint", "h:1")
    assert args.deadline == DEFAULT_DEADLINE
    assert args.accept == []
    assert args.endpoints == ["h:1"]
    assert not args.json
    assert query_from_args(args) == TaskQuery("uri://t", {}, Resources())


def test_repeated_options_keep_their_order() -> None:
    args = parse("--endpoint", "a:1", "--endpoint", "b:2", "--accept-servicetype", "uri://x",
                 "--accept-servicetype", "uri://y")  # fmt: skip
    assert args.endpoints == ["a:1", "b:2"]
    assert args.accept == ["uri://x", "uri://y"]


def test_an_endpoint_may_name_a_site_s_replicas() -> None:
    args = parse("--endpoint", "a:1, b:2", "--endpoint", "dns:///ep.example.org:50051")
    assert args.endpoints == ["a:1,b:2", "dns:///ep.example.org:50051"]
    parser = build_parser()
    assert parser.parse_args(["info", "dns:///ep:1"]).address == "dns:///ep:1"
    assert parser.parse_args(["accept", "a:1,b:2", "OFFER"]).address == "a:1,b:2"


@pytest.mark.parametrize(
    "argv",
    [
        ["ask", "--tasktype", "uri://t", "--endpoint", "a:1,,b:2"],
        ["ask", "--tasktype", "uri://t", "--endpoint", "dns:ep:1"],
        ["info", "a:1,dns:///b:2"],
        ["ask", "--endpoint", "h:1"],  # no --tasktype
        ["ask", "--tasktype", "not a uri", "--endpoint", "h:1"],
        ["ask", "--tasktype", "uri://t", "--endpoint", "nohost"],
        ["ask", "--tasktype", "uri://t", "--accept-servicetype", "bad type"],
        ["ask", "--tasktype", "uri://t", "--deadline", "0"],
        ["ask", "--tasktype", "uri://t", "--deadline", "nan"],
        ["info"],
        ["info", "h:1", "--deadline", "-1"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_nan_given_with_set_is_a_plain_string() -> None:
    args = build_parser().parse_args(
        ["ask", "--tasktype", "uri://x", "--endpoint", "h:1", "--set", "a=NaN"]
    )
    assert query_from_args(args).taskinfo == {"a": "NaN"}


def test_rank_is_chosen_from_the_query_unless_given() -> None:
    parser = build_parser()
    args = parser.parse_args(["ask", "--tasktype", "uri://x", "--endpoint", "h:1"])
    assert args.rank is None  # chosen from the query: earliest with --window
    args = parser.parse_args(
        ["ask", "--tasktype", "uri://x", "--endpoint", "h:1", "--rank", "most-memory"]
    )
    assert args.rank == "most-memory"
    with pytest.raises(SystemExit):
        parser.parse_args(["ask", "--tasktype", "uri://x", "--endpoint", "h:1", "--rank", "x"])


@pytest.mark.parametrize(
    "args",
    [
        ["--cores", "99999999999999999999999"],
        ["--memory", "99999999999999999999PiB"],
        ["--window", "now/+9000000d", "--duration", "1h"],
        ["--window", "now/+1h", "--duration", "999999999999d"],
        ["--deadline", "1e10"],
    ],
    ids=["cores", "memory", "window", "duration", "deadline"],
)
def test_absurd_numbers_are_usage_errors(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ask", "--tasktype", "uri://x", "--endpoint", "127.0.0.1:1", *args]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "a=1e400"],
        ["--taskinfo", '{"a": NaN}'],
        ["--taskinfo", '{"a": Infinity}'],
        ["--set", "a=12345678901234567890"],
        ["--taskinfo", "@"],
        ["--taskinfo", "@DEEP"],
        ["--taskinfo", "@VERYDEEP"],
        ["--taskinfo", "@LATIN1"],
    ],
    ids=["overflow", "nan", "infinity", "bigint", "no-file-name", "deep", "very-deep", "latin1"],
)
def test_unsendable_taskinfo_is_a_usage_error(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {
        "@DEEP": '{"a": ' + "[" * 700 + "]" * 700 + "}",
        "@VERYDEEP": '{"a": ' + "[" * 5000 + "]" * 5000 + "}",
        "@LATIN1": '{"a": "caf\u00e9"}',
    }
    if args[-1] in files:
        path = tmp_path / "taskinfo.json"
        encoding = "latin-1" if args[-1] == "@LATIN1" else "utf-8"
        path.write_text(files[args[-1]], encoding=encoding)
        args = [args[0], f"@{path}"]
    argv = ["ask", "--tasktype", "uri://x", "--endpoint", "127.0.0.1:1", "--deadline", "1", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error" in err


@pytest.mark.parametrize(("name", "days"), [("today", 0), ("tomorrow", 1)])
def test_a_named_day_is_a_whole_day_window_in_utc(name: str, days: int) -> None:
    window = window_arg(name)
    today = datetime.now(UTC).date()
    assert window.start == datetime.combine(today, time(), UTC) + timedelta(days=days)
    assert window.end - window.start == timedelta(days=1)


def test_a_window_that_is_neither_a_range_nor_a_day_names_both_forms() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="START/END, today or tomorrow"):
        window_arg("next-week")


def test_ep_version_names_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"ep (ep-server) {importlib.metadata.version('ep-server')}"
    )


@pytest.mark.parametrize("command", ["info", "bookings"])
def test_one_ep_commands_take_endpoint_as_ask_does(command: str) -> None:
    parser = build_parser()
    by_flag = parser.parse_args([command, "--endpoint", "127.0.0.1:1"])
    by_position = parser.parse_args([command, "127.0.0.1:1"])
    assert address_from_args(by_flag) == address_from_args(by_position) == "127.0.0.1:1"


def test_accept_takes_endpoint_before_or_after_the_offer() -> None:
    args = build_parser().parse_args(["accept", "OFFER", "--endpoint", "127.0.0.1:1"])
    assert (address_from_args(args), args.offer_id) == ("127.0.0.1:1", "OFFER")


@pytest.mark.parametrize(
    "argv", [["info"], ["info", "127.0.0.1:1", "--endpoint", "127.0.0.1:2"]], ids=["none", "both"]
)
def test_naming_no_ep_or_two_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "name the EP once: HOST:PORT or --endpoint HOST:PORT" in capsys.readouterr().err


def test_help_states_the_exit_statuses_and_that_endpoints_may_use_tls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ask", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 ask: at least one acceptable YES" in text
    assert "130 interrupted" in text
    assert "(plaintext unless --tls, --ca or --cert)" in text
