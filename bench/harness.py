"""What every benchmark shares: the machine it ran on, server processes on
loopback and the CPU and memory they use, the Ask method, timing and
statistics, the command line, and publishing the results.

Server processes are read through ``/proc`` (Linux): CPU time from
``/proc/<pid>/stat`` (user + system, in clock ticks), resident memory from
``/proc/<pid>/status``, worker processes from ``/proc/<pid>/task/<pid>/children``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, TypeVar

import grpc

from ep_server.pb import execution_planner_pb2 as pb

__all__ = [
    "ASK_METHOD",
    "ASK_NAME",
    "EXAMPLE_TASKINFO",
    "EXAMPLE_TASKTYPE",
    "LISTENING",
    "LOOPBACK",
    "ROOT",
    "SERVICE_NAME",
    "BenchError",
    "ServerProcess",
    "ask_bytes",
    "machine",
    "median",
    "new_parser",
    "parse_args",
    "percentile",
    "publish",
    "python_m",
    "since_ms",
    "timed",
    "utc_stamp",
]

P = ParamSpec("P")
T = TypeVar("T")

#: The repository: servers run here, with tests/ (for fake_plugins) on their path.
ROOT: Final = Path(__file__).resolve().parent.parent
#: A free port on loopback, chosen by the server.
LOOPBACK: Final = "127.0.0.1:0"
#: The line ep-server and bench.bare log once they serve; group 1 is the address.
LISTENING: Final = r"listening on (127\.0\.0\.1:\d+)"
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 20.0

_SERVICE = pb.DESCRIPTOR.services_by_name["ExecutionPlannerService"]
SERVICE_NAME: Final = _SERVICE.full_name
ASK_NAME: Final = _SERVICE.methods_by_name["Ask"].name
#: The Ask method's path on the wire, ``/<package>.<Service>/Ask``.
ASK_METHOD: Final = f"/{SERVICE_NAME}/{ASK_NAME}"

#: The IVOA note's example task.
EXAMPLE_TASKTYPE: Final = "uri://docker-container"
EXAMPLE_TASKINFO: Final = {"image": "docker.io/example:1.0"}

_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A server that did not start, a wrong answer or count: the benchmark
    itself failed."""


# --- The machine -------------------------------------------------------------------


def machine(*extra: str) -> str:
    """Architecture, CPUs (and model), OS, Python, plus ``extra`` items."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"{platform.machine()}, {os.cpu_count()} CPUs{f' ({model})' if model else ''}",
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
        *extra,
    ]
    return ", ".join(parts)


# --- Server processes --------------------------------------------------------------


def python_m(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class ServerProcess:
    """A server in a child process, on loopback, that has said it is ready.

    Its announcing stream (stdout or stderr) is read by a thread to the end,
    so a server that keeps writing never blocks on a full pipe.
    """

    def __init__(self, proc: subprocess.Popen[str], ready: re.Match[str]) -> None:
        self.proc = proc
        #: The line that said it was ready, matched against the ``ready`` pattern.
        self.ready = ready

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        ready: str,
        *,
        stream: Literal["stdout", "stderr"] = "stderr",
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> ServerProcess:
        """Run ``argv`` in the repository with the packaged default config
        (``EP_CONFIG`` unset), tests/ on ``PYTHONPATH`` and ``env`` added,
        and wait until a line of ``stream`` matches the regex ``ready``.

        :raises BenchError: when the process ends, or stays silent for
            ``timeout`` seconds, before such a line.
        """
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
        environ.pop("EP_CONFIG", None)
        # Each server's HTTP door on a free port, not all on the default 8080.
        environ["EP_HTTP__LISTEN"] = "127.0.0.1:0"
        environ.update(env or {})
        pipe, rest = subprocess.PIPE, (None if stream == "stdout" else subprocess.DEVNULL)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=environ,
            text=True,
            stdout=pipe if stream == "stdout" else rest,
            stderr=pipe if stream == "stderr" else rest,
        )
        out = proc.stdout if stream == "stdout" else proc.stderr
        assert out is not None
        match, seen = _wait_for(out, re.compile(ready), timeout)
        if match is None:
            _stop(proc)
            tail = "".join(seen).strip() or "(nothing)"
            raise BenchError(f"{' '.join(argv[1:])} did not start; it wrote:\n{tail}")
        return cls(proc, match)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server process and its direct children (workers, with --workers)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return [self.pid, *map(int, children.split())]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its workers."""
        ticks = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / _TICKS

    def rss_mb(self) -> float:
        """Resident memory of the server process (not its workers), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within 20 s; its exit status."""
        return _stop(self.proc)


def _wait_for(
    stream: Iterable[str], ready: re.Pattern[str], timeout: float
) -> tuple[re.Match[str] | None, list[str]]:
    """The first line of ``stream`` matching ``ready`` (None at its end or
    after ``timeout``), and the last lines read before it. The reading
    thread goes on reading to the end of the stream."""
    found: list[re.Match[str]] = []
    seen: deque[str] = deque(maxlen=20)
    done = threading.Event()

    def read() -> None:
        for line in stream:
            if not done.is_set():
                seen.append(line)
                match = ready.search(line)
                if match:
                    found.append(match)
                    done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return (found[0] if found else None), list(seen)


def _stop(proc: subprocess.Popen[str]) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def ask_bytes(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """The Ask method on ``channel``, taking and returning serialized messages
    (so the caller decides what to decode, and when)."""
    return channel.unary_unary(ASK_METHOD)


# --- Time and statistics -----------------------------------------------------------


def since_ms(started: float) -> float:
    """Milliseconds since ``started``, a :func:`time.perf_counter` reading."""
    return (time.perf_counter() - started) * 1000


def timed(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[float, T]:
    """Milliseconds one call took, and its result."""
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return since_ms(started), result


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return statistics.median(values)


def percentile(values: Iterable[float], q: float) -> float:
    """The value at rank ``int(q * n)`` of the sorted values (the largest
    for ``q`` near 1); ``nan`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def utc_stamp() -> str:
    """Now, to the minute: ``2030-01-01 12:00 UTC``."""
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


# --- The command line and the results ----------------------------------------------


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of a module's docstring."""
    return argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])


def parse_args(
    parser: argparse.ArgumentParser, quick: Mapping[str, Any], results: Path
) -> argparse.Namespace:
    """Add ``--no-write`` and ``--quick`` to ``parser`` and parse.

    ``--quick`` makes ``quick`` (option dest -> value) the defaults, so that
    options given explicitly still win, and implies ``--no-write``: a quick
    run checks that the benchmark works and is never published.
    """
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not write to bench/{results.name}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, short run to check the benchmark works (implies --no-write)",
    )
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(no_write=True, **quick)
    return parser.parse_args()


def publish(text: str, results: Path, title: str, *, write: bool, append: bool = True) -> None:
    """Print ``text`` and, if ``write``, append it to ``results`` (which gets
    ``title`` as its heading when new), or with ``append=False`` replace
    the file with ``title`` and ``text``."""
    print("\n" + text)
    if not write:
        return
    if not append:
        results.write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
        print(f"\nwritten to {results.relative_to(ROOT)}")
        return
    header = "" if results.exists() else f"# {title}\n\n"
    with results.open("a", encoding="utf-8") as out:
        out.write(header + text + "\n\n")
    print(f"\nappended to {results.name} in {results.parent}")
