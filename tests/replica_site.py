"""A replicated EP site of real processes, for tests/test_replicas.py.

PostgreSQL is a throwaway server of its own (``tools.cluster``'s
:class:`~tools.cluster.postgres.ThrowawayPostgres`, made with the
machine's ``initdb``), so that a test can stop and restart it without
touching the server the rest of the suite shares; each test gets a database
of its own on it. The replicas are ``ep-server serve`` processes started
with ``tools.cluster``'s process helpers, all with one config: the site's
pools, callers with tokens (:data:`OWNERS`), and the test plugin
:mod:`fake_plugins.booking_log`, which writes down every booking announced
to it in one file that all replicas share.

The final state is read straight from the database: the overbooked
instants computed in SQL (``postgres_rows.OVERBOOKED``), and the holds for a
brute-force check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.schedule.postgres_rows import OVERBOOKED
from tools.cluster.postgres import ThrowawayPostgres
from tools.cluster.processes import ClusterError, free_ports, log_tail
from tools.cluster.replicas import SERVICE, Replica, start_replica

__all__ = [
    "ANNOUNCE_RETRY_AFTER",
    "OWNERS",
    "POOLS",
    "SERVICE",
    "Site",
    "health",
    "throwaway_postgres",
    "token_of",
]

TESTS = Path(__file__).resolve().parent
GIB = 2**30
#: The site's pools: small enough that the clients of a flood fill them.
POOLS = {"cores": 32, "memory": 64 * GIB}
#: The callers the site knows, each with a token of its own.
OWNERS = tuple(f"owner{i:02d}" for i in range(20))
#: Seconds a replica may take to say SERVING after it was started.
START_SECONDS = 60.0

_CONFIG = """\
[server]
grace_period = 2.0

[host]
cores = {cores}
memory = {memory}

[plugins]
allow = ["booking_log"]
modules = ["booking_log=fake_plugins.booking_log"]
deadline = 5.0

[plugin.booking_log]
file = "{announced}"

[auth]
tokens_file = "{tokens}"

[schedule]
ledger = "{ledger}"
pools = {{ cores = {cores}, memory = {memory} }}
max_outstanding_offers = 1000
ledger_connections = 4
announce_retry_after = {announce_retry_after}
"""

#: ``[schedule] announce_retry_after`` of the site: short, so that a test
#: sees bookings a killed replica never announced announced by the others.
ANNOUNCE_RETRY_AFTER = 10.0


def token_of(owner: str) -> str:
    return f"{owner}-token-0123456789abcdef"


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server of its own, started, in a new directory under
    the system's temporary one (pytest's are closed to the ``postgres``
    user that the server runs as), stopped and removed afterwards; a test
    fails (never skips) when it cannot be made."""
    folder = Path(tempfile.mkdtemp(prefix="ep-test-replicas-"))
    folder.chmod(0o711)  # the postgres user reaches its own directory inside
    server = None
    try:
        server = ThrowawayPostgres(folder / "postgres", free_ports(1)[0], folder)
        server.start()
    except ClusterError as exc:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"these tests need a PostgreSQL server of their own: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def health(channel: grpc.aio.Channel, service: str = SERVICE) -> int:
    """The health service's answer for ``service`` (-1 when it cannot be asked)."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.aio.AioRpcError:
        return -1
    return int(reply.status)


@dataclass
class Site:
    """One site's database on ``postgres``, its config, and its replicas."""

    postgres: ThrowawayPostgres
    folder: Path
    database: str
    replicas: list[Replica] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, postgres: ThrowawayPostgres, folder: Path, database: str) -> Site:
        """A new database and the config every replica reads."""
        folder.mkdir(parents=True)
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        site = cls(postgres, folder, database)
        digests = {owner: hashlib.sha256(token_of(owner).encode()).hexdigest() for owner in OWNERS}
        tokens = "".join(f'[tokens.{o}]\ntoken_sha256 = "{d}"\n' for o, d in digests.items())
        (folder / "tokens.toml").write_text(tokens)
        site.config.write_text(
            _CONFIG.format(
                cores=POOLS["cores"],
                memory=POOLS["memory"],
                announced=site.announced_file,
                tokens=folder / "tokens.toml",
                ledger=site.dsn,
                announce_retry_after=ANNOUNCE_RETRY_AFTER,
            )
        )
        return site

    @property
    def dsn(self) -> str:
        return f"postgresql://ep@127.0.0.1:{self.postgres.port}/{self.database}"

    @property
    def config(self) -> Path:
        return self.folder / "ep.toml"

    @property
    def announced_file(self) -> Path:
        return self.folder / "announced.txt"

    async def start(self, count: int, *, workers: int = 1) -> list[grpc.aio.Channel]:
        """Start ``count`` replicas (each ``workers`` processes on its port)
        at once, wait until each says SERVING; a channel to each."""
        env = {"PYTHONPATH": str(TESTS)}
        ports = free_ports(2 * count)
        started = []
        for i in range(count):
            name = f"replica-{len(self.replicas) + 1}"
            metrics = ports[2 * i + 1] if workers == 1 else None
            replica = start_replica(
                name, self.config, self.folder / f"{name}.log", ports[2 * i], metrics,
                workers=workers, env=env,
            )  # fmt: skip
            self.replicas.append(replica)
            started.append(replica)
        channels = [grpc.aio.insecure_channel(r.address) for r in started]
        self.channels += channels
        await self.until_health(channels, health_pb2.HealthCheckResponse.SERVING, START_SECONDS)
        return channels

    async def until_health(
        self, channels: Sequence[grpc.aio.Channel], status: int, seconds: float
    ) -> float:
        """Seconds until every one of ``channels`` says ``status`` for the
        EP service; fails past ``seconds`` (or when a replica has exited)."""
        started = time.monotonic()
        for _ in range(int(seconds / 0.1)):
            self.check_alive()
            said = await asyncio.gather(*(health(c) for c in channels))
            if all(s == status for s in said):
                return time.monotonic() - started
            if time.monotonic() - started > seconds:
                break
            await asyncio.sleep(0.1)
        pytest.fail(f"the replicas did not all say {status} within {seconds:g} s: {said}")

    def check_alive(self) -> None:
        """Fail, with its log, when a replica not killed by :meth:`kill` has exited."""
        for replica in self.replicas:
            if replica.child.running() or replica.name in self.killed:
                continue
            pytest.fail(f"{replica.name} exited; its log:\n{log_tail(replica.child.log, 40)}")

    async def kill(self, replica: Replica) -> None:
        """SIGKILL, and wait until it is gone."""
        self.killed.add(replica.name)
        replica.child.send(signal.SIGKILL)
        await asyncio.to_thread(replica.child.wait, 10)

    def stubs(self) -> list[pb_grpc.ExecutionPlannerServiceStub]:
        return [pb_grpc.ExecutionPlannerServiceStub(c) for c in self.channels]

    async def stop(self) -> None:
        """Close the channels, stop every replica (SIGTERM, all at once)."""
        for channel in self.channels:
            await channel.close()
        for replica in self.replicas:
            replica.child.send(signal.SIGTERM)
        for replica in self.replicas:
            await asyncio.to_thread(replica.child.wait, 15)

    # --- The final state, from the database --------------------------------------

    def query(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(statement, params).fetchall()

    def overbooked(self) -> list[tuple[Any, ...]]:
        """Every instant where a pool's holds (bookings and unexpired
        offers) exceed its capacity, computed in SQL."""
        return self.query(OVERBOOKED, {"clock": _now_us()})

    def holds(self) -> list[tuple[datetime, datetime, dict[str, int]]]:
        """The holds as intervals, for a brute-force check."""
        rows = self.query(
            "SELECT start_us, end_us, need FROM ep_bookings WHERE state = 1 UNION ALL "
            "SELECT start_us, end_us, need FROM ep_offers WHERE expire_us > %s",
            (_now_us(),),
        )
        return [(_at(start), _at(end), need) for start, end, need in rows]

    def bookings(self) -> dict[str, tuple[str, int]]:
        """Booking id -> (offer id, state), every booking in the ledger."""
        rows = self.query("SELECT id, offer_id, state FROM ep_bookings")
        return {booking: (offer, state) for booking, offer, state in rows}

    def announced(self) -> list[str]:
        """The booking ids announced to the plugin, once a line each time."""
        if not self.announced_file.exists():
            return []
        return self.announced_file.read_text().split()


def _now_us() -> int:
    return (datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
