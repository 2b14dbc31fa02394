"""``ep`` argument parsing: pure, no gRPC."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ep_server.client.args import (
    DEFAULT_DEADLINE,
    UsageError,
    apply_sets,
    build_parser,
    cores_arg,
    memory_arg,
    query_from_args,
    set_arg,
    taskinfo_arg,
)
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


@pytest.mark.parametrize(
    "argv",
    [
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
