"""``make cluster`` for real: a throwaway PostgreSQL, ``ep-server migrate``,
three replicas and HAProxy; asked through the balancer and booked across
replicas; then Ctrl-C, after which nothing it started is left.

HAProxy is installed with apt-get when missing, as the target does; where
that is impossible the cluster cannot start and this test fails with the
tool's own explanation.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
#: The first start may install HAProxy with apt-get; after that, seconds.
START_SECONDS = 600.0
STOP_SECONDS = 60.0


@dataclass
class Run:
    """The ``make cluster`` process, its output, and the state it wrote."""

    process: subprocess.Popen[bytes]
    output: Path
    state: dict[str, Any]

    def printed(self) -> str:
        return self.output.read_text(errors="replace")


def _start(folder: Path) -> Run:
    ready, output = folder / "ready.json", folder / "output.txt"
    args = f"--ready-file {ready} --logs {folder / 'logs'}"
    with output.open("wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "cluster", f"CLUSTER_ARGS={args}"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's job
        )
    deadline = time.monotonic() + START_SECONDS
    for _ in range(int(START_SECONDS / 0.2)):
        if ready.exists():
            return Run(process, output, json.loads(ready.read_text()))
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    _interrupt(process)
    pytest.fail(f"make cluster did not come up:\n{output.read_text(errors='replace')}")


def _interrupt(process: subprocess.Popen[bytes]) -> int | None:
    """Ctrl-C, as a terminal sends it: SIGINT to the whole process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Run]:
    run = _start(tmp_path)
    try:
        yield run
    finally:
        _interrupt(run.process)


def _asks(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(r'^ep_rpc_requests_total\{code="OK",method="Ask"\} (\S+)$', text, re.M)
    return int(float(match[1])) if match else 0


def _printed_commands(run: Run) -> list[list[str]]:
    """The ``ep`` command lines the cluster printed."""
    return [shlex.split(line) for line in run.printed().splitlines() if " ask " in line or
            re.match(r"\s+\S+/ep (accept|bookings) ", line)]  # fmt: skip


def _ep(argv: list[str]) -> Any:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{shlex.join(argv)}:\n{done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def test_make_cluster(cluster: Run) -> None:
    state = cluster.state
    replicas = state["replicas"]
    assert len(replicas) == 3

    # One client connection to the balancer: its calls reach every replica.
    before = [_asks(r["metrics"]) for r in replicas]
    request = pb.AskRequest(tasktype="uri://docker-container")
    request.taskinfo.update({"image": "docker.io/example:1.0"})
    with grpc.insecure_channel(state["balancer"]) as channel:
        stub = pb_grpc.ExecutionPlannerServiceStub(channel)
        for _ in range(30):
            assert stub.Ask(request, timeout=10).responseword == pb.YES
    spread = [_asks(r["metrics"]) - b for r, b in zip(replicas, before, strict=True)]
    assert sum(spread) == 30
    assert all(spread), f"calls per replica: {spread}"

    # The commands it printed work as printed.
    ask, book, accept, bookings, spread_ask = _printed_commands(cluster)
    assert _ep([*ask, "--json"])["chosen"]["servicetype"] == "uri://docker-uws"
    assert len(_ep([*spread_ask, "--json"])["results"]) == 1  # one site, three replicas
    offer = _ep([*book, "--json"])["chosen"]
    accept[accept.index("OFFER_ID")] = offer["id"]
    booking = _ep([*accept, "--json"])[0]
    assert booking["offer_id"] == offer["id"]
    assert [b["id"] for b in _ep([*bookings, "--json"])] == [booking["id"]]

    # Booked through one replica, seen through every other.
    token = ["--token-file", state["token_file"]]
    first, *others = [r["address"] for r in replicas]
    direct = [*book[: book.index("--endpoint")], "--endpoint", first, *token, "--json"]
    offer = _ep(direct)["chosen"]
    booked = _ep([ask[0], "accept", others[0], offer["id"], *token, "--json"])[0]
    for address in [first, *others]:
        ids = {b["id"] for b in _ep([ask[0], "bookings", address, *token, "--json"])}
        assert ids == {booking["id"], booked["id"]}, address

    # Ctrl-C stops it all and leaves nothing behind.
    pids = [r["pid"] for r in replicas] + [state["postgres"]["pid"], state["haproxy"]["pid"]]
    ports = [state["balancer"], *(r["address"] for r in replicas), _pg_address(state)]
    _interrupt(cluster.process)
    printed = cluster.printed()
    assert "ep-cluster: stopping" in printed, printed
    assert "ep-cluster: stopped" in printed, printed
    assert [pid for pid in pids if _alive(pid)] == []
    assert _processes_mentioning(state["folder"]) == []
    assert not Path(state["folder"]).exists()
    assert [address for address in ports if _listening(address)] == []


def _pg_address(state: dict[str, Any]) -> str:
    return state["postgres"]["dsn"].split("@", 1)[1].split("/", 1)[0]


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and _alive(int(entry.name)):
                found.append(cmdline)
    return found


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0
