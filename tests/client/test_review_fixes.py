"""Client behaviour found wanting in review, kept fixed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from ep_server.client import TLS, Answer, Client, Failure, FailureKind, Site, TaskQuery
from ep_server.client.args import build_parser, query_from_args
from ep_server.client.cli import main
from ep_server.client.convert import MAX_TASKINFO_DEPTH, request_from_query
from ep_server.client.render import cut, printable, results_json, table, width
from ep_server.client.results import Reason, Result
from ep_server.model import Slot
from ep_server.pb import execution_planner_pb2 as pb

SERVICE = "ivoa.ep.v1.ExecutionPlannerService"
QUERY = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})


@pytest.fixture
async def future_ep():
    """An EP from a newer protocol: its verdict word is a value this client
    does not know (proto3 enums are open)."""

    async def ask(request: bytes, context: object) -> bytes:
        reply = pb.AskResponse()
        reply.offers.add(servicetype="uri://s")
        data = reply.SerializeToString()
        return b"\x08\x07" + data  # responseword = 7

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(ask)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Ask": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Site("future", f"127.0.0.1:{port}")
    await server.stop(0)


async def test_an_unreadable_reply_is_that_sites_failure_only(future_ep, start_ep):
    good = await start_ep("good")
    query = TaskQuery("uri://docker-container", {"image": "docker.io/example:1.0"})
    async with Client() as client:
        results = {
            r.site.name: r.outcome
            async for r in client.ask_many([future_ep, good], query, deadline=5)
        }
    assert isinstance(results["future"], Failure)
    assert results["future"].kind is FailureKind.CLIENT_ERROR
    assert isinstance(results["good"], Answer)


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
def test_absurd_numbers_are_usage_errors(args, capsys):
    argv = ["ask", "--tasktype", "uri://x", "--endpoint", "127.0.0.1:1", *args]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unreadable_files_and_tokens_are_usage_errors(tmp_path, capsys, monkeypatch):
    binary = tmp_path / "bad"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    base = ["ask", "--tasktype", "uri://x", "--deadline", "1"]
    assert main([*base, "--sites", str(binary)]) == 2
    assert main([*base, "--endpoint", "127.0.0.1:1", "--token-file", str(binary)]) == 2
    monkeypatch.setenv("EP_TOKEN", "caf\u00e9 token")
    assert main([*base, "--endpoint", "127.0.0.1:1"]) == 2
    assert "Traceback" not in capsys.readouterr().err


# --- second review (2026-11-25): what a remote site or a user's input can do ---


def _result(name, answer):
    return Result(Site(name, "127.0.0.1:1"), answer)


def test_a_yes_without_offers_keeps_its_row():
    rows = table([_result("empty", Answer("YES")), _result("no", Answer("NO"))]).splitlines()
    assert len(rows) == 3  # the header, and one row per site
    assert "YES (no offers)" in rows[1]


def test_text_from_a_site_cannot_break_the_table_or_drive_the_terminal():
    evil = "line1\nline2\ttab \x1b[31mRED\x1b[0m \r overwritten"
    answer = Answer("NO", reasons=(Reason("X", evil),))
    text = table([_result("site", answer)])
    assert "\x1b" not in text
    assert "\r" not in text
    assert "\t" not in text
    assert len(text.splitlines()) == 2
    assert "line1\\x0aline2\\x09tab \\x1b[31mRED" in text


def test_wide_characters_keep_the_columns_aligned():
    text = table([_result("東京", Answer("NO")), _result("ab", Answer("NO"))])
    _header, tokyo, ab = text.splitlines()
    # "NO" starts in the same terminal column on both rows (東京 is 4 columns wide)
    assert tokyo.index("NO") + 2 == ab.index("NO")


@pytest.mark.parametrize(
    ("taskinfo", "problem"),
    [
        ({"a": float("nan")}, "taskinfo.a: nan is not a JSON number"),
        ({"a": [1, float("inf")]}, "taskinfo.a[1]: inf"),
        ({"a": 2**60}, "too large to send exactly"),
        ({"a": {1: 2}}, "key 1 is not a string"),
        ({"a": object()}, "is not JSON"),
    ],
)
def test_a_taskinfo_no_site_would_take_is_refused_before_sending(taskinfo, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        request_from_query(TaskQuery("uri://x", taskinfo))


def test_nesting_is_checked_against_the_protocols_limit():
    def nested(levels):
        value: dict = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    request_from_query(TaskQuery("uri://x", nested(MAX_TASKINFO_DEPTH)))
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        request_from_query(TaskQuery("uri://x", nested(MAX_TASKINFO_DEPTH + 1)))
    with pytest.raises(ValueError, match="nested deeper"):  # never a RecursionError
        request_from_query(TaskQuery("uri://x", nested(5000)))


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
def test_unsendable_taskinfo_is_a_usage_error(args, tmp_path, capsys):
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


def test_nan_given_with_set_is_a_plain_string():
    args = build_parser().parse_args(
        ["ask", "--tasktype", "uri://x", "--endpoint", "h:1", "--set", "a=NaN"]
    )
    assert query_from_args(args).taskinfo == {"a": "NaN"}


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 1e10, 1e12])
async def test_a_deadline_grpc_cannot_keep_is_refused(seconds, start_ep):
    site = await start_ep()
    async with Client() as client:
        with pytest.raises(ValueError, match="finite number of seconds"):
            await client.ask(site, TaskQuery("uri://docker-container", {}), deadline=seconds)
        long = await client.ask(site, TaskQuery("uri://docker-container", {}), deadline=1e8)
    assert long.answer is not None, long.failure


async def test_a_server_name_the_certificate_does_not_have_is_a_tls_failure(tls_fake_ep, certs):
    tls = TLS(ca=certs.cert, cert=certs.cert, key=certs.key, server_name="wrong.example")
    async with Client() as client:
        result = await client.ask(Site("tls", tls_fake_ep.address, tls), QUERY, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TLS, result.failure
    assert result.failure.attempts == 1  # not retried: it would fail the same way


def test_a_closed_pipe_ends_quietly(thread_ep):
    address = thread_ep(cores=8)
    ep = Path(sys.executable).with_name("ep")
    command = (
        f"{ep} ask --tasktype uri://docker-container --json "
        + " ".join(f"--endpoint {address}" for _ in range(300))
        + " | head -c 1"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "{"
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr


def test_ctrl_c_still_shows_the_answers_already_in(thread_ep, unaccepting_address, capsys):
    """An interrupted ep ask prints what came back and exits 130."""
    import os
    import signal
    import threading

    address = thread_ep(cores=8)
    # A real SIGINT (not _thread.interrupt_main, which does not wake the loop)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = main(
            [
                "ask", "--tasktype", "uri://docker-container", "--json", "--deadline", "30",
                "--endpoint", address, "--endpoint", unaccepting_address,
            ]
        )  # fmt: skip
    finally:
        timer.cancel()
    out, err = capsys.readouterr()
    assert code == 130
    doc = json.loads(out)
    assert [r["site"] for r in doc["results"]] == [address]
    assert "1 site(s) not heard from" in err


def test_sites_named_twice_are_asked_once_and_site_lists_add_up(thread_ep, tmp_path, capsys):
    address = thread_ep(cores=8)
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text(f'[[site]]\nname = "one"\naddress = "{address}"\n')
    second.write_text(f'[[site]]\nname = "two"\naddress = "{address}"\n')
    argv = ["ask", "--tasktype", "uri://docker-container", "--json"]
    argv += ["--sites", str(first), "--sites", str(second), "--endpoint", address]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert [r["site"] for r in json.loads(out)["results"]] == ["one"]
    assert "two is one again" in err


def test_rank_option_and_the_earliest_slot_in_json():
    parser = build_parser()
    args = parser.parse_args(["ask", "--tasktype", "uri://x", "--endpoint", "h:1"])
    assert args.rank is None  # chosen from the query: earliest with --window
    args = parser.parse_args(
        ["ask", "--tasktype", "uri://x", "--endpoint", "h:1", "--rank", "most-memory"]
    )
    assert args.rank == "most-memory"
    with pytest.raises(SystemExit):
        parser.parse_args(["ask", "--tasktype", "uri://x", "--endpoint", "h:1", "--rank", "x"])
    start = datetime(2031, 3, 5, 9, tzinfo=UTC)
    reason = Reason("NO_SLOT", "later", earliest_slot=Slot(start, start + timedelta(hours=2)))
    doc = json.loads(results_json([_result("s", Answer("NO", reasons=(reason,)))]))
    slot = doc["results"][0]["answer"]["reasons"][0]["earliest_slot"]
    assert slot == {"start": "2031-03-05T09:00:00+00:00", "end": "2031-03-05T11:00:00+00:00"}


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
def test_terminal_widths(text, columns):
    assert width(text) == columns


def test_a_long_progress_line_is_cut_by_columns_not_characters():
    assert cut("東京東京東京", 7) == "東京..."
    assert width(cut("東京" * 50, 20)) <= 20
    assert cut("short", 20) == "short"
    assert printable("\U000e0001") == "\\U000e0001"
