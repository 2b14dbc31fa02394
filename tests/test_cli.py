"""``ep-server serve`` as a real process: start-up line, signals, buf curl."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent


class ServerProcess:
    def __init__(
        self, *args: str, env: dict[str, str] | None = None, ready: str = r"listening on"
    ) -> None:
        self.ready = ready
        environ = {
            **os.environ,
            "PYTHONPATH": str(TESTS),
            "EP_PLUGINS__ALLOW": "static,slow",
            "EP_PLUGINS__MODULES": "slow=fake_plugins.slow",
            "EP_SCHEDULE__LEDGER": ":memory:",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ep_server", "serve", "--listen", "127.0.0.1:0", *args],
            env=environ,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if match and re.search(self.ready, line):
                return int(match[1])
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.lines))

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        _, rest = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + rest


@pytest.fixture
def server():
    started: list[ServerProcess] = []

    def start(*args, **kwargs):
        started.append(ServerProcess(*args, **kwargs))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            # SIGTERM, as an operator stops it: a --workers parent forwards it
            # to its workers (SIGKILL would leave them running, orphaned).
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.communicate()


def ask(
    port: int, tasktype: str, taskinfo: dict | None = None, timeout: float = 10
) -> pb.AskResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = pb.AskRequest(tasktype=tasktype)
        request.taskinfo.update(taskinfo or {})
        return pb_grpc.ExecutionPlannerServiceStub(channel).Ask(request, timeout=timeout)


def test_startup_logs_one_line_with_address_and_plugins(server):
    s = server()
    startup = [line for line in s.lines if "listening on" in line]
    assert len(startup) == 1
    assert "plugins: " in startup[0]
    assert "static (ep-server" in startup[0]
    assert "slow" in startup[0]
    assert "config: built-in default config" in startup[0]
    s.proc.send_signal(signal.SIGTERM)
    assert s.finish()[0] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_in_flight_calls_finish(server, sig):
    s = server()
    result: Future[pb.AskResponse] = Future()

    def call() -> None:
        try:
            result.set_result(ask(s.port, "uri://slow", {"seconds": 1.0}))
        except Exception as exc:
            result.set_exception(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)  # the call is now waiting inside the plugin
    s.proc.send_signal(sig)
    response = result.result(timeout=15)
    thread.join()
    assert response.responseword == pb.YES
    code, log = s.finish()
    assert code == 0
    assert "shutting down" in log
    assert "stopped" in log


def test_buf_curl_works_through_reflection(server):
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    assert buf, "buf is installed by `make install` (buf-bin)"
    s = server()
    request = (
        '{"tasktype": "uri://docker-container", "taskinfo": {"image": "docker.io/example:1.0"}}'
    )
    for protocol in ("grpc-v1", "grpc-v1alpha"):
        out = subprocess.run(
            [
                buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                "--reflect-protocol", protocol, "-d", request,
                f"http://127.0.0.1:{s.port}/ivoa.ep.v1.ExecutionPlannerService/Ask",
            ],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        answer = json.loads(out.stdout)
        assert answer["responseword"] == "YES"
        assert answer["offers"][0]["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_lists_every_service_s_methods_through_reflection(server, protocol):
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    s = server()
    out = subprocess.run(
        [
            buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
            "--reflect-protocol", protocol, "--list-methods", f"http://127.0.0.1:{s.port}",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    methods = out.stdout.split()
    for method in (
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "ivoa.ep.v1.ExecutionPlannerService/Ask",
        "grpc.health.v1.Health/Check",
    ):
        assert method in methods


def test_a_stuck_plugin_thread_does_not_keep_a_stopped_server_alive(server):
    env = {
        "EP_PLUGINS__ALLOW": "static,stuck",
        "EP_PLUGINS__MODULES": "stuck=fake_plugins.stuck",
        "EP_PLUGINS__DEADLINE": "0.3",
    }
    s = server(env=env)
    answer = ask(s.port, "uri://stuck", {"seconds": 60})
    assert [r.code for r in answer.reasons] == ["PLUGIN_TIMEOUT"]
    stopped = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    code, log = s.finish(timeout=20)
    assert code == 0
    assert time.monotonic() - stopped < 10, "exit waited for the stuck plugin"
    assert "plugin thread(s) still running" in log


def test_a_bad_config_stops_startup_with_a_message(tmp_path):
    path = tmp_path / "ep.toml"
    path.write_text('[server]\nlisten = "nowhere"\n')
    out = subprocess.run(
        [sys.executable, "-m", "ep_server", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "server.listen" in out.stderr
    assert "HOST:PORT" in out.stderr


def test_a_busy_port_is_an_error_not_a_shared_port(server):
    s = server()
    out = subprocess.run(
        [sys.executable, "-m", "ep_server", "serve", "--listen", f"127.0.0.1:{s.port}"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "EP_SCHEDULE__LEDGER": ":memory:"},
    )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{s.port}" in out.stderr


def test_the_console_script_is_installed():
    out = subprocess.run(
        [str(BIN / "ep-server"), "serve", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "--listen" in out.stdout
    assert "--config" in out.stdout


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_workers_share_one_port_and_stop_together(server):
    s = server("--workers", "2", ready=r"with 2 workers", env={"EP_SCHEDULE__ENABLED": "false"})
    workers = children_of(s.proc.pid)
    assert len(workers) == 2
    for _ in range(10):  # a fresh connection each time; all are served
        assert ask(s.port, "uri://docker-container", {"image": "docker.io/x:1"}).responseword
    s.proc.send_signal(signal.SIGTERM)
    code, log = s.finish()
    assert code == 0
    assert log.count("stopped") == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_dead_worker_stops_the_rest_and_fails(server):
    s = server("--workers", "2", ready=r"with 2 workers", env={"EP_SCHEDULE__ENABLED": "false"})
    first, second = children_of(s.proc.pid)
    os.kill(first, signal.SIGKILL)
    code, log = s.finish()
    assert code == 1
    assert f"worker {first} exited" in log
    assert not Path(f"/proc/{second}").exists()


def test_workers_cannot_share_a_booking_ledger():
    out = subprocess.run(
        [sys.executable, "-m", "ep_server", "serve", "--workers", "2", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "EP_SCHEDULE__LEDGER": ":memory:"},
    )  # fmt: skip
    assert out.returncode == 1
    assert "cannot share the booking ledger" in out.stderr


def test_workers_must_be_positive():
    out = subprocess.run(
        [sys.executable, "-m", "ep_server", "serve", "--workers", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--workers must be at least 1" in out.stderr


def test_a_signal_during_worker_start_up_leaves_no_orphans():
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "EP_SCHEDULE__ENABLED": "false",
        "EP_PLUGINS__MODULES": "slow=fake_plugins.slow_start",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ep_server", "serve", "--workers", "2", "--listen", "127.0.0.1:0"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = children_of(proc.pid)
        time.sleep(0.05)
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)  # while the workers still configure
    proc.wait(timeout=30)
    time.sleep(0.5)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert alive == [], f"orphaned workers {alive}"


def test_a_busy_port_says_address_already_in_use(server):
    s = server()
    out = subprocess.run(
        [str(BIN / "ep-server"), "serve", "--listen", f"127.0.0.1:{s.port}"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "EP_SCHEDULE__LEDGER": ":memory:"},
    )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{s.port}: address already in use" in out.stderr
    assert "add_port.cc" not in out.stderr


#: A line gRPC's C core writes itself (absl format), not through logging.
CORE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.M)


def test_grpc_core_lines_go_through_logging_on_both_commands(server, tmp_path):
    from certs import CA

    ca = CA(tmp_path)
    pair = ca.issue("localhost", server=True)
    tls = {"EP_TLS__CERT": str(pair.cert), "EP_TLS__KEY": str(pair.key)}
    tls |= {"EP_TLS__CLIENT_CA": str(ca.pem), "EP_TLS__REQUIRE_CLIENT_CERT": "true"}
    s = server(env={**tls, "EP_LOGGING__FORMAT": "json", "GRPC_VERBOSITY": "INFO"})
    ask = [str(BIN / "ep"), "ask", "--tasktype", "uri://docker-container"]
    ask += ["--endpoint", f"localhost:{s.port}", "--ca", str(ca.pem)]
    client = subprocess.run(
        ask, capture_output=True, text=True, timeout=60,
        env={**os.environ, "GRPC_VERBOSITY": "INFO"},
    )  # fmt: skip
    assert client.returncode == 1
    assert "TLS error" in client.stdout
    assert "client certificate" in client.stdout
    assert not CORE_LINE.search(client.stderr), client.stderr
    s.proc.send_signal(signal.SIGTERM)
    code, log = s.finish()
    assert code == 0
    records = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    handshakes = [r for r in records if r["logger"] == "grpc" and "Handshake" in r["message"]]
    assert handshakes, log
    assert handshakes[0]["grpc_source"].startswith("ssl_transport_security")


def test_ep_server_version_and_help(capsys):
    import importlib.metadata

    from ep_server.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"ep-server {importlib.metadata.version('ep-server')}"
    )
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--log-level {DEBUG,INFO,WARNING,ERROR} log lines at this level and above" in text
    assert "only they share it (SO_REUSEPORT), another ep-server on the port still fails" in text
    assert "1 cannot start or do it: bad config, a busy port" in text


def test_the_startup_line_says_what_is_on(server, tmp_path):
    from certs import CA

    pair = CA(tmp_path).issue("localhost", server=True)
    s = server(env={"EP_TLS__CERT": str(pair.cert), "EP_TLS__KEY": str(pair.key)})
    [startup] = [line for line in s.lines if "listening on" in line]
    assert "bookings: ledger :memory:" in startup
    assert "tls: on; auth: off (anonymous callers only); metrics: off; tracing: off" in startup
    s.proc.send_signal(signal.SIGTERM)
    assert s.finish()[0] == 0


def test_tracing_without_an_opentelemetry_sdk_warns(server):
    s = server(env={"EP_TRACING__ENABLED": "true"})
    s.proc.send_signal(signal.SIGTERM)
    code, log = s.finish()
    assert code == 0
    assert "no OpenTelemetry SDK is set up in this process, so spans go nowhere" in log
    assert "opentelemetry-instrument ep-server serve" in log


def test_each_worker_s_log_lines_carry_its_number_and_pid(server):
    env = {"EP_SCHEDULE__ENABLED": "false", "EP_LOGGING__FORMAT": "json"}
    s = server("--workers", "2", ready=r"with 2 workers", env=env)
    workers = children_of(s.proc.pid)
    s.proc.send_signal(signal.SIGTERM)
    code, log = s.finish()
    assert code == 0
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    started = {
        (r["worker"], r["pid"]) for r in records if "worker" in r and "listening" in r["message"]
    }
    assert {w for w, _ in started} == {1, 2}
    assert {p for _, p in started} == set(workers)


def test_workers_refuse_a_port_that_another_group_of_workers_serves(server):
    env = {"EP_SCHEDULE__ENABLED": "false"}
    s = server("--workers", "2", ready=r"with 2 workers", env=env)
    workers = children_of(s.proc.pid)
    out = subprocess.run(
        [str(BIN / "ep-server"), "serve", "--workers", "2", "--listen", f"127.0.0.1:{s.port}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{s.port}: address already in use" in out.stderr
    s.proc.send_signal(signal.SIGTERM)
    assert s.finish()[0] == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize("command", ["ep-server", "ep"])
def test_the_commands_run_with_standard_error_closed(command):
    out = subprocess.run(
        ["bash", "-c", f"{BIN / command} --version 2>&-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0
    assert "0." in out.stdout
