"""``ep`` end to end: ``main(argv)`` against real EPs on loopback.

Besides the answers: usage errors exit 2 without a traceback, a site named
twice is asked once, Ctrl-C still shows the answers already in, and a reader
that goes away (``ep ask ... | head``) ends ``ep`` quietly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ep_server.client import cli
from ep_server.client.cli import main

DOCKER = "uri://docker-container"
UWS = "uri://docker-uws"
ASK = ["ask", "--tasktype", DOCKER, "--set", "image=docker.io/example:1.0", "--deadline", "5"]

ThreadEP = Callable[..., str]
Capsys = pytest.CaptureFixture[str]


def test_yes_prints_a_table_and_exits_0(thread_ep: ThreadEP, capsys: Capsys) -> None:
    address = thread_ep(cores=8)
    assert main([*ASK, "--endpoint", address, "--accept-servicetype", UWS]) == 0
    out, err = capsys.readouterr()
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["#", "SITE", "ANSWER", "SERVICE"]
    assert row.split()[:5] == ["1", address, "YES", UWS, "http://example.org/dkuws"]
    assert "cores <=8" in row
    assert "best: " + address in out
    assert err == ""  # no progress when stderr is not a terminal


def test_unaccepted_service_type_exits_1(thread_ep: ThreadEP, capsys: Capsys) -> None:
    address = thread_ep()
    assert main([*ASK, "--endpoint", address, "--accept-servicetype", "uri://other"]) == 1
    assert "YES (not accepted)" in capsys.readouterr().out


def test_no_answer_shows_reasons_and_exits_1(thread_ep: ThreadEP, capsys: Capsys) -> None:
    address = thread_ep(cores=4, memory="1GiB")
    assert main([*ASK, "--endpoint", address, "--cores", "8", "--memory", "2GiB:4GiB"]) == 1
    out = capsys.readouterr().out
    assert "NO" in out.splitlines()[1].split()
    assert "INSUFFICIENT_CORES" in out
    assert "INSUFFICIENT_MEMORY" in out


def test_json_ranks_sites_and_reports_failures(
    thread_ep: ThreadEP, unaccepting_address: str, refused_address: str, capsys: Capsys
) -> None:
    small, big = thread_ep(cores=2), thread_ep(cores=32)
    argv = [*ASK, "--deadline", "1.5", "--json"]
    for address in (small, unaccepting_address, big, refused_address):
        argv += ["--endpoint", address]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["site"] for r in doc["results"]] == [small, unaccepting_address, big, refused_address]
    assert [c["site"] for c in doc["ranking"]] == [big, small]
    assert doc["chosen"]["site"] == big
    assert doc["chosen"]["resources"]["cores"] == {"max": 32}
    kinds = {r["site"]: r.get("failure", {}).get("kind") for r in doc["results"]}
    assert kinds == {
        small: None,
        big: None,
        unaccepting_address: "DEADLINE_EXCEEDED",
        refused_address: "UNREACHABLE",
    }
    assert doc["results"][0]["answer"]["responseword"] == "YES"


def test_only_failures_exit_1(refused_address: str, capsys: Capsys) -> None:
    assert main([*ASK, "--endpoint", refused_address, "--deadline", "1"]) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert "FAILED" in row
    assert "unreachable [UNAVAILABLE]" in row


def test_sites_file(thread_ep: ThreadEP, tmp_path: Path, capsys: Capsys) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(f'[[site]]\nname = "lab"\naddress = "{thread_ep()}"\n', encoding="utf-8")
    assert main([*ASK, "--sites", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["1", "lab", "YES"]


def test_progress_on_a_terminal(
    thread_ep: ThreadEP, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    monkeypatch.setattr(cli, "_tty", lambda: True)
    first, second = thread_ep(), thread_ep()
    assert main([*ASK, "--endpoint", first, "--endpoint", second]) == 0
    err = capsys.readouterr().err
    assert "2/2 answered" in err
    assert err.endswith("\r\x1b[K")  # the line is erased at the end


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint", "h:1", "--taskinfo", "{not json"], "not valid JSON"),
        (["--endpoint", "h:1", "--taskinfo", "@/nonexistent.json"], "cannot read"),
        (["--endpoint", "h:1", "--memory", "lots"], "not a byte count"),
        (["--endpoint", "h:1", "--cores", "9:1"], "MIN is greater than MAX"),
        (["--endpoint", "h:1", "--set", "image.tag=1"], "image is already set"),
        (["--endpoint", "h:1", "--set", "nokey"], "KEY=VALUE"),
        ([], "give --sites FILE or at least one --endpoint"),
        (["--sites", "/nonexistent/sites.toml"], "cannot read site list"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: Capsys) -> None:
    assert main([*ASK, *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_invalid_sites_file_exits_2(tmp_path: Path, capsys: Capsys) -> None:
    path = tmp_path / "sites.toml"
    path.write_text('[[site]]\nname = "x"\naddress = "nohost"\n', encoding="utf-8")
    assert main([*ASK, "--sites", str(path)]) == 2
    assert "site #1 ('x'): address: expected HOST:PORT" in capsys.readouterr().err


def test_help_exits_0(capsys: Capsys) -> None:
    assert main(["ask", "--help"]) == 0
    assert "--accept-servicetype" in capsys.readouterr().out


def test_info(thread_ep: ThreadEP, capsys: Capsys) -> None:
    address = thread_ep()
    assert main(["info", address]) == 0
    out = capsys.readouterr().out
    assert f"EP at {address}" in out
    assert f"  {DOCKER}\n    -> {UWS} (plugin static)" in out
    assert "static [LOADED]" in out


def test_a_site_s_replicas_answer_as_one_site(
    thread_ep: ThreadEP, refused_address: str, capsys: Capsys
) -> None:
    joined = ",".join([thread_ep(), refused_address, thread_ep()])
    assert main([*ASK, "--endpoint", joined, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert result["address"] == joined
    assert result["answer"]["responseword"] == "YES"


def test_info_through_a_dns_name(thread_ep: ThreadEP, capsys: Capsys) -> None:
    port = thread_ep().rpartition(":")[2]
    assert main(["info", f"dns:///localhost:{port}"]) == 0
    assert f"EP at dns:///localhost:{port}" in capsys.readouterr().out


def test_info_json(thread_ep: ThreadEP, capsys: Capsys) -> None:
    assert main(["info", thread_ep(), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tasktypes"][0]["tasktype"] == DOCKER
    assert int(doc["capacity"]["cores"]) >= 1


def test_info_unreachable_exits_1(refused_address: str, capsys: Capsys) -> None:
    assert main(["info", refused_address, "--deadline", "1"]) == 1
    assert "unreachable" in capsys.readouterr().err


def test_unreadable_files_and_tokens_are_usage_errors(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "bad"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    base = ["ask", "--tasktype", "uri://x", "--deadline", "1"]
    assert main([*base, "--sites", str(binary)]) == 2
    assert main([*base, "--endpoint", "127.0.0.1:1", "--token-file", str(binary)]) == 2
    monkeypatch.setenv("EP_TOKEN", "caf\u00e9 token")
    assert main([*base, "--endpoint", "127.0.0.1:1"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(thread_ep: ThreadEP) -> None:
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


def test_ctrl_c_still_shows_the_answers_already_in(
    thread_ep: ThreadEP, unaccepting_address: str, capsys: Capsys
) -> None:
    """An interrupted ep ask prints what came back and exits 130."""
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


def test_sites_named_twice_are_asked_once_and_site_lists_add_up(
    thread_ep: ThreadEP, tmp_path: Path, capsys: Capsys
) -> None:
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


# --- sites that speak the IVOA note's HTTP interface --------------------------


def test_an_http_site_is_asked_beside_a_grpc_one(
    thread_ep_server: Callable[..., Any], capsys: Capsys
) -> None:
    ep = thread_ep_server(cores=8)
    assert main([*ASK, "--endpoint", ep.address, "--endpoint", ep.http_url]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:3]]
    assert sorted(row[1] for row in rows) == sorted([ep.address, ep.http_url + "/"])
    assert all(row[2:5] == ["YES", UWS, "http://example.org/dkuws"] for row in rows)
    assert "2 site(s): 2 with an acceptable YES, 0 failed" in out


def test_a_site_list_names_an_http_site_by_url_and_json_shows_it(
    thread_ep_server: Callable[..., Any], tmp_path: Path, capsys: Capsys
) -> None:
    ep = thread_ep_server(cores=8)
    path = tmp_path / "sites.toml"
    path.write_text(
        f'[[site]]\nname = "grpc"\naddress = "{ep.address}"\n\n'
        f'[[site]]\nname = "note"\nurl = "{ep.http_url}"\n'
    )
    assert main([*ASK, "--sites", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    grpc_result, note_result = doc["results"]
    assert note_result["site"] == "note"
    assert note_result["address"] == ep.http_url + "/"
    assert note_result["answer"] == grpc_result["answer"]
    assert note_result["answer"]["offers"][0]["resources"]["cores"] == {"max": 8}


def test_site_followed_by_a_url_asks_that_site(
    thread_ep_server: Callable[..., Any], capsys: Capsys
) -> None:
    ep = thread_ep_server()
    assert main([*ASK, "--site", ep.http_url, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert result["answer"]["responseword"] == "YES"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint", "http://h/", "--ca", "ca.pem"], "http://h/ is plaintext"),
        (["--endpoint", "http://user:pw@h/"], "no user or password in the URL"),
        (["--endpoint", "http://h/?a=1"], "no query or fragment"),
        (["--endpoint", "ftp://h/"], "expected HOST:PORT or an http:// or https:// URL"),
    ],
)
def test_bad_urls_are_usage_errors(argv: list[str], message: str, capsys: Capsys) -> None:
    assert main([*ASK, *argv]) == 2
    assert message in capsys.readouterr().err


def test_commands_for_one_ep_take_no_url(capsys: Capsys) -> None:
    assert main(["info", "http://127.0.0.1:8080/"]) == 2
    assert "expected HOST:PORT, got the URL" in capsys.readouterr().err


#: A foreign note server's answer whose text would drive a terminal.
HOSTILE = {
    "reponseword": "YES",
    "servicetype": UWS,
    "serviceinfo": {"endpoint": "http://x/\x1b]0;pwned\x07"},
    "message": "line one\nline two\x1b[2J",
}


@pytest.fixture
def hostile_url() -> Iterator[str]:
    """A note server on its own thread that answers :data:`HOSTILE`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(HOSTILE).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_text_from_an_http_site_is_printed_escaped(hostile_url: str, capsys: Capsys) -> None:
    assert main([*ASK, "--endpoint", hostile_url]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "http://x/\\x1b]0;pwned\\x07" in out
    assert "line one\\x0aline two\\x1b[2J" in out
