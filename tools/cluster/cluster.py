"""One replicated site on this machine, started in order and stopped in
reverse: PostgreSQL, ``ep-server migrate``, the replicas, HAProxy.

Everything lives in one temporary directory (the database too), removed
when the cluster stops; every child's output goes to a log file in
``logs`` (by default inside that directory).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.cluster import haproxy
from tools.cluster.postgres import ThrowawayPostgres
from tools.cluster.processes import Child, free_ports, run, wait_until
from tools.cluster.replicas import Replica, healthy, migrate, start_replica, write_site

__all__ = ["Cluster", "State"]


@dataclass(frozen=True)
class State:
    """Where everything is, once the cluster is up (also written as JSON)."""

    balancer: str
    replicas: list[dict[str, Any]]
    postgres: dict[str, Any]
    haproxy: dict[str, Any]
    token_file: str
    folder: str
    logs: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Cluster:
    """``replicas`` EP replicas on one ledger behind HAProxy on ``port``
    (0: a free one)."""

    def __init__(self, replicas: int = 3, port: int = 0, logs: Path | None = None) -> None:
        self.count = replicas
        self.port = port
        self._logs = logs
        self._stack = contextlib.ExitStack()
        self._children: list[Child] = []

    def start(self) -> State:
        """Start everything, each step waiting (bounded) until the last is up.

        :raises ClusterError: naming the step that failed and its log; what
            was started before is stopped by :meth:`stop`.
        """
        folder = Path(tempfile.mkdtemp(prefix="ep-cluster-"))
        self._stack.callback(shutil.rmtree, folder, ignore_errors=True)
        folder.chmod(0o711)  # the postgres user reaches its own directory inside
        logs = self._logs or folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        binary = haproxy.ensure_haproxy(logs / "apt-get.log")

        ports = free_ports(2 + 2 * self.count)
        pg_port, balancer_port = ports[0], self.port or ports[1]
        postgres = ThrowawayPostgres(folder / "postgres", pg_port, logs)
        self._stack.callback(postgres.stop)
        postgres.start()
        assert postgres.server is not None
        self._children.append(postgres.server)

        site = write_site(folder, postgres.dsn)
        migrate(site.config, logs / "migrate.log")
        replicas = self._start_replicas(site.config, logs, ports[2:])

        config = folder / "haproxy.cfg"
        stats = folder / "haproxy.sock"
        named = [(r.name, r.address) for r in replicas]
        config.write_text(haproxy.config(f"127.0.0.1:{balancer_port}", named, str(stats)))
        run([binary, "-c", "-q", "-f", str(config)], logs / "haproxy.log", timeout=30)
        balancer = Child("haproxy", [binary, "-db", "-f", str(config)], logs / "haproxy.log")
        self._stack.callback(balancer.stop, signal.SIGTERM, 10)
        self._children.append(balancer)
        wait_until(
            lambda: self._all_up(stats),
            "HAProxy's health checks of the replicas",
            seconds=30,
            step=0.2,
            alive=self.check,
        )
        return State(
            balancer=f"127.0.0.1:{balancer_port}",
            replicas=[_describe(r) for r in replicas],
            postgres={
                "dsn": postgres.dsn,
                "pid": postgres.server.pid,
                "log": str(postgres.server.log),
            },
            haproxy={
                "version": haproxy.version(binary),
                "pid": balancer.pid,
                "config": str(config),
                "stats_socket": str(stats),
                "log": str(balancer.log),
            },
            token_file=str(site.token_file),
            folder=str(folder),
            logs=str(logs),
        )

    def _start_replicas(self, config: Path, logs: Path, ports: list[int]) -> list[Replica]:
        replicas = []
        for i in range(self.count):
            name = f"replica-{i + 1}"
            log = logs / f"{name}.log"
            replicas.append(start_replica(name, config, log, ports[2 * i], ports[2 * i + 1]))
        children = [r.child for r in replicas]
        self._stack.callback(_stop_together, children, signal.SIGTERM, 15)
        self._children += children
        wait_until(
            lambda: all(healthy(r.port) for r in replicas),
            "the replicas' health (SERVING)",
            seconds=60,
            step=0.2,
            alive=self.check,
        )
        return replicas

    def _all_up(self, stats: Path) -> bool:
        try:
            states = haproxy.server_states(stats)
        except OSError:
            return False
        return len(states) == self.count and all(s == ("UP", "L7OK") for s in states.values())

    def check(self) -> None:
        """:raises ClusterError: when any child has exited."""
        for child in self._children:
            child.check()

    def watch(self, step: float = 0.5) -> None:
        """Return never; raise :class:`ClusterError` when a child exits."""
        while True:
            self.check()
            time.sleep(step)

    def stop(self) -> None:
        """Stop everything started, in reverse order, and remove the directory."""
        self._stack.close()


def _stop_together(children: list[Child], sig: int, timeout: float) -> None:
    """Signal every child at once, then wait for each (``timeout`` in all)."""
    for child in children:
        child.send(sig)
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(max(0.1, deadline - time.monotonic()))


def _describe(replica: Replica) -> dict[str, Any]:
    return {
        "name": replica.name,
        "address": replica.address,
        "metrics": f"http://127.0.0.1:{replica.metrics_port}/metrics",
        "pid": replica.child.pid,
        "log": str(replica.child.log),
    }
