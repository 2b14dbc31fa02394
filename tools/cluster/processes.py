"""The cluster's child processes: started with their output in a log file,
stopped in a bounded time, and never outliving the tool.

Each child runs in a session of its own, so that Ctrl-C in the terminal
reaches only the tool, which then stops the children in order (balancer,
replicas, database). Each is started through ``setpriv --pdeathsig TERM``,
which also switches user where one is asked for (``initdb`` and
``postgres`` refuse to run as root), and execs the command itself: no
process stays in between, so a signal sent to a child reaches the program,
and a child whose parent dies (even by SIGKILL) gets SIGTERM from the kernel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

__all__ = [
    "Child",
    "ClusterError",
    "free_ports",
    "log_tail",
    "run",
    "signals_deferred",
    "wait_until",
]


class ClusterError(RuntimeError):
    """A step that failed; the message says which and where its log is."""


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on now
    (all held open while they are chosen, so none is picked twice)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:]) or "    (empty log)"


@contextlib.contextmanager
def signals_deferred(message: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (printing ``message``
    when one comes), then act on them: for a step that must not be cut
    short, such as apt-get installing a package."""
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if not received:
            print(message, file=sys.stderr, flush=True)
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        signal.raise_signal(received[0])


def _command(argv: Sequence[str], user: str | None) -> list[str]:
    if shutil.which("setpriv") is None:
        raise ClusterError("setpriv (from util-linux) is needed to start the cluster's processes")
    switch = ["--reuid", user, "--regid", user, "--init-groups"] if user else []
    return ["setpriv", *switch, "--pdeathsig", "TERM", "--", *argv]


def run(
    argv: Sequence[str],
    log: Path,
    *,
    timeout: float,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run a command to its end, its output appended to ``log``.

    :raises ClusterError: when it fails or outlives ``timeout`` seconds (it is
        then killed), with the end of its log.
    """
    with log.open("ab") as out:
        try:
            done = subprocess.run(
                _command(argv, user),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(env),
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{argv[0]} took over {timeout:g} s; log {log}") from None
    if done.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv)} failed (exit {done.returncode}); log {log}:\n{log_tail(log)}"
        )


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(extra or {})}


class Child:
    """A long-running child process whose output goes to ``log``.

    Start it on a thread that lives as long as the child should: the
    parent-death signal comes when the thread that started the child ends,
    not only the process (a child started on a pool's worker thread is sent
    SIGTERM when that thread is retired).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._out: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            _command(argv, user),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=_environment(env),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def check(self) -> None:
        """:raises ClusterError: when the child has exited, with its log's end."""
        code = self.process.poll()
        if code is not None:
            raise ClusterError(
                f"{self.name} exited (status {code}); log {self.log}:\n{log_tail(self.log)}"
            )

    def send(self, sig: int) -> None:
        """Send ``sig`` unless the child has exited."""
        if self.running():
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the child to exit, then SIGKILL it."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        finally:
            self._out.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Send ``sig`` and wait up to ``timeout`` seconds; then SIGKILL."""
        self.send(sig)
        self.wait(timeout)


def wait_until(
    ready: Callable[[], bool],
    what: str,
    *,
    seconds: float,
    step: float = 0.1,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Call ``ready`` until it is true: at most ``seconds`` seconds and
    ``seconds / step`` tries. ``alive`` raises when waiting is pointless
    (the process waited for has exited).

    :raises ClusterError: when time runs out.
    """
    deadline = time.monotonic() + seconds
    for _ in range(max(1, int(seconds / step))):
        alive()
        if ready():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(step)
    alive()
    raise ClusterError(f"{what}: not ready after {seconds:g} s")
