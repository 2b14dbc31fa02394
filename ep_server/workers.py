"""``ep-server serve --workers N``: N server processes sharing one port.

Python serves one core per process, so to use N cores the parent starts N
copies of ``ep-server serve`` that all bind the same address with
SO_REUSEPORT; the kernel spreads incoming *connections* among them (a single
HTTP/2 connection stays with one worker). The parent only supervises: it
forwards SIGTERM/SIGINT so each worker stops gracefully, and if a worker dies
on its own it stops the rest and exits non-zero, leaving restarts to the
service manager (systemd, Kubernetes) rather than hiding a crash loop.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from ep_server.config import Settings
from ep_server.logs import WORKER_ENV

__all__ = ["notify_ready", "run_workers"]

#: Environment variable naming the pipe on which a worker reports "listening".
READY_FD = "EP_WORKER_READY_FD"

log = logging.getLogger(__name__)


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket: port 0 becomes one
    real port that every worker can then bind too.

    A given port is first bound without SO_REUSEPORT, which fails while
    anything holds it, another group of workers included (SO_REUSEPORT
    would let this group join that one silently).

    :raises OSError: "cannot listen on HOST:PORT: ..." when it is taken.
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    address = (host.strip("[]"), port)
    try:
        if port:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise OSError(f"cannot listen on {host}:{port}: {why}") from exc
    return sock


def run_workers(settings: Settings, argv: Sequence[str], workers: int) -> int:
    """Start ``workers`` copies of ``ep-server serve`` on one port; wait.

    :param argv: the worker's own arguments (``--config FILE`` and the like);
        ``--listen`` and the port-sharing setting are added here.
    """
    host, port = _split(settings.server.listen)
    reserved = _reserve(host, port)
    address = f"{host}:{reserved.getsockname()[1]}"
    extra = []
    http_reserved = None
    if settings.http.enabled:  # the HTTP door's port is shared the same way
        http_host, http_port = _split(settings.http.listen)
        try:
            http_reserved = _reserve(http_host, http_port)
        except OSError:
            reserved.close()
            raise
        extra = ["--http-listen", f"{http_host}:{http_reserved.getsockname()[1]}"]
    ready_read, ready_write = os.pipe()
    env = {**os.environ, "EP_SERVER__REUSE_PORT": "true", READY_FD: str(ready_write)}
    command = [sys.executable, "-m", "ep_server", "serve", *argv, "--listen", address, *extra]
    group = _Group()
    # Signals are forwarded from before the first worker starts, so that a
    # SIGTERM during start-up stops the workers too instead of orphaning them.
    previous = {sig: signal.signal(sig, group.forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for number in range(1, workers + 1):
            numbered = {**env, WORKER_ENV: str(number)}  # tells its log lines apart
            group.children.append(subprocess.Popen(command, env=numbered, pass_fds=(ready_write,)))
        os.close(ready_write)
        if not _all_ready(ready_read, workers, group):
            log.error("not every worker started; stopping")
            group.failed = True
            group.forward(signal.SIGTERM, None)
        else:
            log.info(
                "ep-server listening on %s with %d workers (pids %s)",
                address,
                workers,
                ", ".join(str(c.pid) for c in group.children),
            )
        reserved.close()  # every worker has bound the port, or is stopping
        if http_reserved is not None:
            http_reserved.close()
        return group.supervise()
    finally:
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _all_ready(fd: int, workers: int, group: _Group, timeout: float = 60.0) -> bool:
    """Wait until each worker has written its byte to the readiness pipe.
    EOF first means a worker died before it listened; a signal or the
    timeout ends the wait too."""
    got = 0
    deadline = time.monotonic() + timeout
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while got < workers and not group.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([pipe], [], [], min(left, 0.5))
            if readable:
                chunk = pipe.read(workers - got)
                if not chunk:
                    return False
                got += len(chunk)
    return got == workers


def notify_ready() -> None:
    """In a worker: tell the parent this process is listening."""
    fd = os.environ.pop(READY_FD, None)
    if fd is not None:
        os.write(int(fd), b"1")
        os.close(int(fd))


class _Group:
    """The workers, and whether they are being stopped."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self.failed = False

    def forward(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def supervise(self) -> int:
        """Wait for every worker; one dying on its own stops the rest."""
        while any(child.poll() is None for child in self.children):
            died = [c for c in self.children if c.poll() not in (None, 0)]
            if died and not self.stopping:
                log.error(
                    "worker %d exited with %s; stopping the others", died[0].pid, died[0].returncode
                )
                self.forward(signal.SIGTERM, None)
            time.sleep(0.2)
        clean = all(c.returncode == 0 for c in self.children)
        return 0 if clean and not self.failed else 1
