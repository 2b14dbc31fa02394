"""The cluster's child processes: logged, stopped in bounded time, never
outliving the tool."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tools.cluster.processes import (
    Child,
    ClusterError,
    free_ports,
    log_tail,
    run,
    signals_deferred,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[3]


def test_free_ports_are_different_and_free() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(1024 <= port <= 65535 for port in ports)


def test_a_child_s_output_goes_to_its_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Child("echo", [sys.executable, "-c", "print('hello'); import sys; sys.exit(3)"], log)
    child.wait(10)
    assert log.read_text() == "hello\n"
    with pytest.raises(
        ClusterError, match=r"echo exited \(status 3\); log .*child\.log:\n    hello"
    ):
        child.check()


def test_a_child_that_ignores_its_signal_is_killed(tmp_path: Path) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    child = Child("stubborn", [sys.executable, "-c", script], tmp_path / "log")
    wait_until(lambda: (tmp_path / "log").read_text() == "up\n", "child", seconds=10)
    start = time.monotonic()
    child.stop(signal.SIGTERM, timeout=0.5)
    assert not child.running()
    assert child.process.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 5


def test_a_child_dies_with_the_tool(tmp_path: Path) -> None:
    """Even when the tool is killed with SIGKILL, its children get SIGTERM."""
    tool = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tools.cluster.processes import Child\n"
        f"child = Child('sleeper', ['sleep', '60'], Path({str(tmp_path / 'log')!r}))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", tool], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait(10)
    wait_until(lambda: not _alive(pid), "the orphaned child's end", seconds=10)


def test_a_child_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    """The parent-death signal follows the starting thread, not the process."""
    started: list[Child] = []

    def start() -> None:
        started.append(Child("sleeper", ["sleep", "60"], tmp_path / "log"))
        # The thread ends once setpriv has set the signal and run the program.
        wait_until(lambda: _program(started[0].pid) == "sleep", "sleep", seconds=10)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(15)
    [child] = started
    wait_until(lambda: not child.running(), "the child's end", seconds=10)
    assert child.process.returncode == -signal.SIGTERM
    child.wait(1)


def _program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its (new) parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_run_reports_a_failure_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    with pytest.raises(ClusterError, match=r"failed \(exit 2\); log .*step\.log:\n    oops"):
        run([sys.executable, "-c", "print('oops'); raise SystemExit(2)"], log, timeout=10)


def test_run_is_bounded_in_time(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ClusterError, match=r"took over 0\.5 s"):
        run(["sleep", "30"], tmp_path / "log", timeout=0.5)
    assert time.monotonic() - start < 5


def test_wait_until_is_bounded_and_stops_when_waiting_is_pointless() -> None:
    start = time.monotonic()
    with pytest.raises(ClusterError, match=r"never: not ready after 0\.3 s"):
        wait_until(lambda: False, "never", seconds=0.3, step=0.05)
    assert time.monotonic() - start < 2
    calls = []

    def dead() -> None:
        calls.append(1)
        raise ClusterError("it exited")

    with pytest.raises(ClusterError, match="it exited"):
        wait_until(lambda: False, "x", seconds=60, alive=dead)
    assert calls == [1]


def test_log_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(30)))
    assert log_tail(path, 2) == "    line 28\n    line 29"
    assert log_tail(tmp_path / "missing") == "    (no log)"


def test_signals_wait_for_a_step_that_must_not_be_cut_short(
    capsys: pytest.CaptureFixture[str],
) -> None:
    done = []

    def step() -> None:
        with signals_deferred("waiting for the step"):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("the step went on")

    with pytest.raises(KeyboardInterrupt):
        step()
    assert done == ["the step went on"]
    assert capsys.readouterr().err == "waiting for the step\n"
