"""Replicated booking benchmark: held scheduled Asks and accepts per second
through real ``ep-server serve`` processes over gRPC, with a SQLite ledger
and with a PostgreSQL ledger shared by one and by several replicas.

Run: ``.venv/bin/python -m bench.replicated`` (``--help`` for the knobs;
``--quick`` for a smoke run of about half a minute). Results are appended
to bench/results-replicated.md (not with ``--quick`` or ``--no-write``).

Configurations, one after another in one run, each on a ledger of its own:

  (a) SQLite   one ``ep-server serve`` on a SQLite file (``synchronous``
               at its default, FULL), the baseline;
  (b) PG x1    one replica on a new PostgreSQL database;
  (c) PG xN    ``--replicas`` replicas (3) sharing one new database.

A PostgreSQL ledger's schema is made by ``ep-server migrate`` before its
replicas start.

PostgreSQL is a throwaway server of its own (tools/cluster's
:class:`ThrowawayPostgres`: ``fsync`` and ``synchronous_commit`` off), or,
with ``--dsn``, a server that gets a new database per configuration,
dropped afterwards. Every EP process listens on 127.0.0.1 and reads the
same config: the site of bench/booking.py (1024 cores, 4 TiB), the
built-in static plugin claiming the Asks' task type, a token per client
(so offers are held; each client is its own caller, within
``max_outstanding_offers``), offers living an hour, the default
``max_offers`` (3) and ``ledger_connections`` (4), no access log.

The load: one process, one ``grpc.aio`` event loop, ``--clients``
coroutines; client n calls replica n mod N through one channel per replica
(round-robin). Before timing, each channel connects and answers one Ask.

  Asks     every client sends Asks with a schedule as bench/booking.py
           builds them (8 cores + 32 GiB, a start within one day, 2-4 h;
           the day uniform over the next ``--days`` days), each answered
           YES holding up to 3 offers; the first offer of each is kept.
  Accepts  every client takes the next kept offer from one shared queue and
           accepts it (with its owner's token) through its own replica,
           which for (c) is mostly not the replica that held it.

Each phase ends after ``--seconds``, after ``--max-calls`` calls per
client, or (accepts) when the kept offers run out, whichever comes first.
Rates are answered calls over the phase's wall time (first call sent to last
answer in); "held Asks/s" counts the YES answers. Latencies are
``perf_counter`` around each call in the client, so they include the
client's own queueing on this shared machine. CPU is read from
``/proc/<pid>/stat`` (user + system, with reaped children) before and
after each phase, for the EP processes, the PostgreSQL server's processes
and this process, as a percentage of one core (the machine's cores x 100
is all of it).

The final state, after the EP processes have stopped: the instants at which
a pool's holds (BOOKED bookings and unexpired offers) exceed it. For
PostgreSQL counted in SQL (``postgres_rows.OVERBOOKED``) and checked by a
sweep in Python over the stored holds; for SQLite by that sweep over the
file's holds. Each must be 0.

Slot search: bench/postgres_ledger.py's ``search``: ``--bookings`` bookings
copied into a new schema, then ``--samples`` searches over random one-day
windows; the target applies to ``place`` without holding (the search).

Targets, for (c): at least 1000 accepts/s and 300 held Asks/s, accept p99
under 50 ms, 0 overbooked instants, and the slot search with 100,000
bookings under 10 ms median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg
from psycopg import sql

from bench import postgres_ledger
from bench.booking import POOLS, SQLITE, scheduled_ask
from bench.harness import (
    ROOT,
    SERVICE_NAME,
    BenchError,
    machine,
    median,
    new_parser,
    parse_args,
    percentile,
    publish,
    since_ms,
    utc_stamp,
)
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.schedule.ledger import to_us
from ep_server.schedule.postgres_rows import OVERBOOKED
from tools.cluster.postgres import ThrowawayPostgres
from tools.cluster.processes import ClusterError, free_ports, log_tail, wait_until
from tools.cluster.replicas import Replica, healthy, migrate, start_replica

RESULTS = ROOT / "bench" / "results-replicated.md"
#: The task type of bench/booking.py's scheduled Asks.
TASKTYPE = scheduled_ask(datetime.now(UTC)).tasktype
#: Each call's gRPC deadline, seconds.
CALL_SECONDS = 10.0
#: Seconds an EP process may take to say SERVING.
START_SECONDS = 60.0
OFFER_TTL = 3600.0
MAX_OUTSTANDING = 1000
MAX_OFFERS = 3
TICKS = os.sysconf("SC_CLK_TCK")

TARGET_ACCEPTS = 1000.0
TARGET_ASKS = 300.0
TARGET_ACCEPT_P99_MS = 50.0
TARGET_SEARCH_MS = 10.0

_CONFIG = """\
[server]
grace_period = 2.0

[host]
cores = {cores}
memory = {memory}

[plugins]
allow = ["static"]

[[plugin.static.claims]]
tasktype = "{tasktype}"
servicetype = "uri://bench-service"
serviceinfo = {{ endpoint = "http://127.0.0.1/bench" }}

[auth]
tokens_file = "{tokens}"

[schedule]
ledger = "{ledger}"
pools = {{ cores = {cores}, memory = {memory} }}
offer_ttl = {ttl}
max_offers = {max_offers}
max_outstanding_offers = {outstanding}
"""


# --- CPU, from /proc ------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now alive (children of every thread)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += map(int, (task / "children").read_text().split())
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    """CPU time used by the trees under ``roots``: user + system of each
    live process plus that of its reaped children."""
    ticks = 0
    for root in roots:
        for pid in process_tree(root):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / TICKS


# --- The site --------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """A client's identity: its owner name and the call metadata with its token."""

    owner: str
    metadata: tuple[tuple[str, str], ...]


def make_callers(count: int) -> list[Caller]:
    tokens = [secrets.token_urlsafe(24) for _ in range(count)]
    return [
        Caller(f"client{n:03d}", (("authorization", f"Bearer {token}"),))
        for n, token in enumerate(tokens)
    ]


def write_config(folder: Path, ledger: str, callers: Sequence[Caller]) -> Path:
    """The config every EP process of one configuration reads, and its tokens file."""
    tokens = folder / "tokens.toml"
    lines = []
    for caller in callers:
        token = caller.metadata[0][1].removeprefix("Bearer ")
        lines.append(f'[tokens.{caller.owner}]\ntoken_sha256 = "{_sha256(token)}"\n')
    tokens.write_text("".join(lines))
    config = folder / "ep.toml"
    config.write_text(
        _CONFIG.format(
            cores=POOLS["cores"], memory=POOLS["memory"], tasktype=TASKTYPE, tokens=tokens,
            ledger=ledger, ttl=OFFER_TTL, max_offers=MAX_OFFERS, outstanding=MAX_OUTSTANDING,
        )
    )  # fmt: skip
    return config


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def replicas(config: Path, folder: Path, count: int) -> Iterator[list[Replica]]:
    """``count`` ``ep-server serve`` processes on ``config``, each SERVING;
    stopped (SIGTERM, then SIGKILL) afterwards, whatever happens."""
    ports = free_ports(count)
    started: list[Replica] = []
    try:
        for i, port in enumerate(ports):
            name = f"ep-{i + 1}"
            started.append(start_replica(name, config, folder / f"{name}.log", port, None))
        for replica in started:
            wait_until(
                functools.partial(healthy, replica.port), f"{replica.name} ({replica.child.log})",
                seconds=START_SECONDS, step=0.2, alive=replica.child.check,
            )  # fmt: skip
        yield started
    finally:
        for replica in started:
            replica.child.send(signal.SIGTERM)
        for replica in started:
            replica.child.wait(15)


# --- PostgreSQL ------------------------------------------------------------------------


@dataclass
class Postgres:
    """Where the PostgreSQL databases are made, and its server's main process."""

    admin_dsn: str
    postmaster: int | None

    def dsn(self, database: str) -> str:
        """The admin DSN (a URI, as the ledger takes) naming ``database`` instead."""
        return urlsplit(self.admin_dsn)._replace(path=f"/{database}").geturl()

    def describe(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            values = [_show(conn, n) for n in ("server_version", "fsync", "synchronous_commit")]
        return f"PostgreSQL {values[0]} (fsync={values[1]}, synchronous_commit={values[2]})"

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new database, dropped afterwards; yields its DSN."""
        name = f"ep_bench_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield self.dsn(name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(name)))


def _show(conn: psycopg.Connection[Any], setting: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    return str(row[0]) if row else "?"


@contextlib.contextmanager
def postgres_server(dsn: str | None, folder: Path) -> Iterator[Postgres]:
    """The server at ``dsn`` or, without one, a throwaway server in
    ``folder``, stopped afterwards."""
    if dsn is not None:
        yield Postgres(dsn, _postmaster(dsn))
        return
    server = ThrowawayPostgres(folder / "postgres", free_ports(1)[0], folder)
    try:
        server.start()
        assert server.server is not None
        yield Postgres(server.dsn, server.server.pid)
    finally:
        server.stop()


def _postmaster(dsn: str) -> int | None:
    """The server's main process, when it runs here and we may read its pid file."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            data = _show(conn, "data_directory")
        return int(Path(data, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, psycopg.Error):
        return None


# --- The load --------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase's clients saw."""

    times: list[float] = field(default_factory=list)  # ms, answered calls
    yes: int = 0
    no: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # role -> % of one core

    def rate(self) -> float:
        return self.yes / self.wall if self.wall else 0.0


Step = Callable[[int], Awaitable[str | None]]


async def drive(clients: int, seconds: float, max_calls: int, step: Step) -> Phase:
    """``clients`` coroutines each calling ``step(client)`` until the
    phase's time or its calls run out, or ``step`` says there is nothing
    left (None); ``step`` answers "yes", "no" or an error's name."""
    phase = Phase()
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        for _ in range(max_calls):
            if time.perf_counter() >= deadline:
                return
            started = time.perf_counter()
            outcome = await step(n)
            if outcome is None:
                return
            if outcome in ("yes", "no"):
                phase.times.append(since_ms(started))
                phase.yes += outcome == "yes"
                phase.no += outcome == "no"
            else:
                phase.errors[outcome] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    phase.wall = time.perf_counter() - started
    return phase


Ask = grpc.aio.UnaryUnaryMultiCallable[pb.AskRequest, pb.AskResponse]
Accept = grpc.aio.UnaryUnaryMultiCallable[pb.AcceptOfferRequest, pb.AcceptOfferResponse]


@dataclass(frozen=True)
class Stub:
    """The two methods the load calls, on one replica's channel."""

    ask: Ask
    accept: Accept

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stub:
        ask: Ask = channel.unary_unary(
            f"/{SERVICE_NAME}/Ask",
            request_serializer=pb.AskRequest.SerializeToString,
            response_deserializer=pb.AskResponse.FromString,
        )
        accept: Accept = channel.unary_unary(
            f"/{SERVICE_NAME}/AcceptOffer",
            request_serializer=pb.AcceptOfferRequest.SerializeToString,
            response_deserializer=pb.AcceptOfferResponse.FromString,
        )
        return cls(ask, accept)


@dataclass
class Load:
    """The clients of one configuration and what they share."""

    stubs: list[Stub]
    callers: list[Caller]
    days: int
    seed: int
    kept: deque[tuple[int, str]] = field(default_factory=deque)  # (client, offer id)

    def stub(self, n: int) -> Stub:
        return self.stubs[n % len(self.stubs)]

    async def ask(self, n: int, rng: random.Random) -> str:
        """One held scheduled Ask; on YES its first offer is kept."""
        minutes = 60 + rng.randrange(self.days * 24 * 60)
        request = scheduled_ask(datetime.now(UTC) + timedelta(minutes=minutes))
        try:
            reply = await self.stub(n).ask(
                request, metadata=self.callers[n].metadata, timeout=CALL_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        if reply.responseword != pb.YES or not reply.offers:
            return "no"
        self.kept.append((n, reply.offers[0].id))
        return "yes"

    async def accept(self, n: int) -> str | None:
        """Accept the next kept offer (as its owner) through client ``n``'s replica."""
        if not self.kept:
            return None
        owner, offer_id = self.kept.popleft()
        request = pb.AcceptOfferRequest(offer_id=offer_id)
        try:
            reply = await self.stub(n).accept(
                request, metadata=self.callers[owner].metadata, timeout=CALL_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        booked = reply.booking.offer_id == offer_id
        return "yes" if booked and reply.booking.state == pb.BOOKING_STATE_BOOKED else "not booked"


async def run_load(
    addresses: Sequence[str],
    callers: list[Caller],
    args: argparse.Namespace,
    probe: Callable[[], dict[str, float]],
) -> dict[str, Phase]:
    """Both phases against ``addresses``; CPU as % of a core from ``probe``."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), CALL_SECONDS)
        load = Load([Stub.on(c) for c in channels], callers, args.days, args.seed)
        await warm_up(load, len(channels))
        rngs = [random.Random(args.seed * 100_000 + n) for n in range(args.clients)]

        async def ask(n: int) -> str:
            return await load.ask(n, rngs[n])

        phases: dict[str, Phase] = {}
        for name, step in (("asks", ask), ("accepts", load.accept)):
            before = probe()
            phase = await drive(args.clients, args.seconds, args.max_calls, step)
            after = probe()
            phase.cpu = {k: 100 * (after[k] - before[k]) / phase.wall for k in after}
            phases[name] = phase
        phases["accepts"].errors["left unaccepted"] = len(load.kept)
        return phases
    finally:
        for channel in channels:
            await channel.close()


async def warm_up(load: Load, replicas: int) -> None:
    """One held Ask through each replica (untimed; its offer is kept)."""
    rng = random.Random(load.seed)
    for n in range(replicas):
        outcome = await load.ask(n, rng)
        if outcome != "yes":
            raise BenchError(f"a scheduled Ask through replica {n + 1} answered {outcome}")


# --- The final state ---------------------------------------------------------------------

Hold = tuple[int, int, Mapping[str, int]]  # start_us, end_us, need


def overbooked_instants(holds: Iterable[Hold], pools: Mapping[str, int]) -> int:
    """Brute force: the instants at which a pool's total held changes to
    more than the pool, by a sweep over every hold's start and end."""
    changes: dict[str, defaultdict[int, int]] = {name: defaultdict(int) for name in pools}
    for start, end, need in holds:
        for name, amount in need.items():
            if name in changes:
                changes[name][start] += amount
                changes[name][end] -= amount
    count = 0
    for name, deltas in changes.items():
        held = 0
        for at in sorted(deltas):
            held += deltas[at]
            count += held > pools[name]
    return count


@dataclass
class FinalState:
    bookings: int
    offers: int
    overbooked: int
    method: str


def sqlite_state(path: Path, clock: int) -> FinalState:
    """The holds of a SQLite ledger file (its server stopped), swept."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        bookings = db.execute("SELECT start_us, end_us, need FROM bookings WHERE state = 1")
        booked = [(s, e, json.loads(n)) for s, e, n in bookings]
        offers = db.execute(
            "SELECT start_us, end_us, need FROM offers WHERE expire_us > ?", [clock]
        )
        held = [(s, e, json.loads(n)) for s, e, n in offers]
    swept = overbooked_instants([*booked, *held], POOLS)
    return FinalState(len(booked), len(held), swept, "sweep of the file's holds")


def postgres_state(dsn: str, clock: int) -> FinalState:
    """OVERBOOKED in SQL, checked by the sweep over the same holds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        in_sql = len(conn.execute(OVERBOOKED, {"clock": clock}).fetchall())
        booked = conn.execute("SELECT start_us, end_us, need FROM ep_bookings WHERE state = 1")
        bookings: list[Hold] = booked.fetchall()
        live = "SELECT start_us, end_us, need FROM ep_offers WHERE expire_us > %s"
        offers: list[Hold] = conn.execute(live, [clock]).fetchall()
    swept = overbooked_instants([*bookings, *offers], POOLS)
    if swept != in_sql:
        return FinalState(len(bookings), len(offers), max(in_sql, swept),
                          f"SQL {in_sql} but sweep {swept}: DISAGREE")  # fmt: skip
    return FinalState(len(bookings), len(offers), in_sql, "SQL (OVERBOOKED), sweep agrees")


# --- One configuration -------------------------------------------------------------------


@dataclass
class Result:
    label: str
    phases: dict[str, Phase]
    state: FinalState


def measure(
    label: str,
    ledger: str,
    count: int,
    folder: Path,
    args: argparse.Namespace,
    postmaster: int | None,
) -> dict[str, Phase]:
    """Start ``count`` EP processes on ``ledger``, run the load, stop them."""
    folder.mkdir()
    callers = make_callers(args.clients)
    config = write_config(folder, ledger, callers)
    if ledger.startswith("postgresql://"):
        migrate(config, folder / "migrate.log")
    with replicas(config, folder, count) as started:
        pids = [r.child.pid for r in started]

        def probe() -> dict[str, float]:
            pg = cpu_seconds([postmaster]) if postmaster else float("nan")
            return {"EP": cpu_seconds(pids), "PostgreSQL": pg, "load": time.process_time()}

        print(f"{label}: {count} EP process(es) serving; load for up to 2 x {args.seconds:g} s",
              flush=True)  # fmt: skip
        try:
            return asyncio.run(run_load([r.address for r in started], callers, args, probe))
        except BenchError as exc:
            logs = "\n".join(f"{r.name}:\n{log_tail(r.child.log)}" for r in started)
            raise BenchError(f"{label}: {exc}; the EP logs end:\n{logs}") from None


def sqlite_config(folder: Path, args: argparse.Namespace) -> Result:
    label = "(a) SQLite x1"
    path = folder / "ledger.sqlite3"
    phases = measure(label, str(path), 1, folder / "sqlite", args, None)
    return Result(label, phases, sqlite_state(path, now_us()))


def postgres_config(
    label: str, count: int, postgres: Postgres, folder: Path, args: argparse.Namespace
) -> Result:
    with postgres.database() as dsn:
        phases = measure(label, dsn, count, folder, args, postgres.postmaster)
        return Result(label, phases, postgres_state(dsn, now_us()))


def now_us() -> int:
    return to_us(datetime.now(UTC))


def slot_search(postgres: Postgres, bookings: int, samples: int) -> dict[str, list[float]]:
    """bench/postgres_ledger.py's search, in a new schema of a new database."""
    with postgres.database() as dsn, postgres_ledger.schema(dsn) as where:
        return postgres_ledger.search(where, bookings, samples)


# --- The report --------------------------------------------------------------------------


def middle(values: list[float]) -> float:
    """The median; nan for no values (a phase where every call failed)."""
    return median(values) if values else float("nan")


def source() -> str:
    """The commit measured, and whether the work tree differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            timeout=10,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                 cwd=ROOT, timeout=10, capture_output=True, text=True,
                                 check=True).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "code: not a git checkout"
    return f"code: {head}" + (f" with {len(changed)} files changed" if changed else "")


def fmt_ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def throughput_table(results: list[Result]) -> list[str]:
    base = results[0].phases
    lines = [
        "| configuration | held Asks/s | Ask p50 ms | Ask p99 ms | accepts/s | accept p50 ms "
        "| accept p99 ms | held Asks/s vs (a) | accepts/s vs (a) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        asks, accepts = r.phases["asks"], r.phases["accepts"]
        lines.append(
            f"| {r.label} | {asks.rate():.0f} | {middle(asks.times):.1f} "
            f"| {percentile(asks.times, 0.99):.1f} | {accepts.rate():.0f} "
            f"| {middle(accepts.times):.1f} | {percentile(accepts.times, 0.99):.1f} "
            f"| {fmt_ratio(asks.rate(), base['asks'].rate())} "
            f"| {fmt_ratio(accepts.rate(), base['accepts'].rate())} |"
        )
    return lines


def state_table(results: list[Result]) -> list[str]:
    lines = [
        "| configuration | phase | calls answered | wall s | NO | errors "
        "| CPU % of a core: EP / PostgreSQL / load generator |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        for name, p in r.phases.items():
            errors = ", ".join(f"{k} {v}" for k, v in sorted(p.errors.items()) if v) or "0"
            cpu = " / ".join("-" if v != v else f"{v:.0f}" for v in p.cpu.values())
            lines.append(f"| {r.label} | {name} | {len(p.times)} | {p.wall:.1f} | {p.no} "
                         f"| {errors} | {cpu} |")  # fmt: skip
    lines += ["", "| configuration | BOOKED bookings | live offers | overbooked instants "
              "| checked by |", "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    for r in results:
        s = r.state
        lines.append(f"| {r.label} | {s.bookings} | {s.offers} | {s.overbooked} | {s.method} |")
    return lines


def search_lines(times: dict[str, list[float]], bookings: int, samples: int) -> list[str]:
    lines = [f"Slot search in PostgreSQL with {bookings:,} bookings ({samples} samples):", ""]
    for name, values in times.items():
        lines.append(f"- {name}: median {middle(values):.2f} ms, "
                     f"p90 {percentile(values, 0.9):.2f} ms")  # fmt: skip
    return lines


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def target_lines(last: Result, search: float | None, bookings: int, clients: int) -> list[str]:
    asks, accepts = last.phases["asks"], last.phases["accepts"]
    p99 = percentile(accepts.times, 0.99)
    lines = [
        f"Targets for {last.label}:",
        "",
        f"- accepts/s >= 1000: {accepts.rate():.0f}: {verdict(accepts.rate() >= TARGET_ACCEPTS)}",
        f"- held scheduled Asks/s >= 300: {asks.rate():.0f}: {verdict(asks.rate() >= TARGET_ASKS)}",
        f"- accept p99 < 50 ms: {p99:.1f} ms: {verdict(p99 < TARGET_ACCEPT_P99_MS)}",
        f"- overbooked instants 0: {last.state.overbooked}: {verdict(last.state.overbooked == 0)}",
    ]
    if search is not None:
        met = verdict(search < TARGET_SEARCH_MS) if bookings >= 100_000 else "not judged"
        lines.append(f"- slot search with 100,000 bookings in PostgreSQL, median < 10 ms: "
                     f"{search:.2f} ms with {bookings:,} bookings: {met}")  # fmt: skip
    in_flight = TARGET_ACCEPTS * TARGET_ACCEPT_P99_MS / 1000
    lines += [
        "",
        f"Each client waits for its answer before its next call, so the mean latency is "
        f"about clients / rate (Little's law): {accepts.rate():.0f} accepts/s with "
        f"{clients} clients means about {1000 * clients / max(accepts.rate(), 1):.0f} ms. "
        f"1000 accepts/s with p99 under 50 ms allows fewer than {in_flight:.0f} calls in flight.",
    ]
    return lines


def report(
    results: list[Result],
    search: dict[str, list[float]],
    args: argparse.Namespace,
    about: str,
    seconds: float,
) -> str:
    command = " ".join(["python -m bench.replicated", *sys.argv[1:]])
    lines = [
        f"## {utc_stamp()}",
        "",
        f"Machine: {about}. Load: one process, {args.clients} grpc.aio clients, "
        f"round-robin over the replicas; phases of at most {args.seconds:g} s and "
        f"{args.max_calls} calls per client; Asks' days uniform over the next {args.days}. "
        f"Whole run {seconds:.0f} s: `{command}`; {source()}.",
        "",
        *throughput_table(results),
        "",
        *state_table(results),
        "",
    ]
    searched = None
    if search:
        lines += [*search_lines(search, args.bookings, args.samples), ""]
        searched = middle(search["place small"])
    lines += target_lines(results[-1], searched, args.bookings, args.clients)
    return "\n".join(lines)


# --- Main --------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C or SIGTERM: stop, cleaning up; a second one is ignored, since
    the clean-up is bounded (each process gets SIGKILL after a while)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def options() -> argparse.Namespace:
    parser = new_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="longest phase, seconds")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--max-calls", type=int, default=300, help="calls per client per phase")
    parser.add_argument("--replicas", type=int, default=3, help="EP replicas in (c)")
    parser.add_argument("--days", type=int, default=364, help="Asks' days spread over")
    parser.add_argument("--bookings", type=int, default=100_000, help="for the slot search")
    parser.add_argument("--samples", type=int, default=200, help="slot searches")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--dsn", help="a postgresql:// URI of a server to use (default: a throwaway one)"
    )
    quick = {"seconds": 3.0, "bookings": 10_000, "samples": 20}
    args = parse_args(parser, quick, RESULTS)
    if not 0 < args.seconds <= 600 or not 1 <= args.days <= 364 or args.clients < 1:
        parser.error("--seconds must be in (0, 600], --days in 1..364, --clients >= 1")
    if args.dsn is not None and not args.dsn.startswith(("postgresql://", "postgres://")):
        parser.error("--dsn must be a postgresql:// URI")
    if not 1 <= args.max_calls * MAX_OFFERS <= MAX_OUTSTANDING:
        parser.error(f"--max-calls must be in 1..{MAX_OUTSTANDING // MAX_OFFERS}")
    return args


def run(args: argparse.Namespace, folder: Path) -> str:
    started = time.perf_counter()
    with postgres_server(args.dsn, folder) as postgres:
        about = machine(SQLITE + " (synchronous=FULL)", postgres.describe())
        print(f"Machine: {about}", flush=True)
        results = [sqlite_config(folder, args)]
        results.append(postgres_config("(b) PG x1", 1, postgres, folder / "pg1", args))
        label = f"(c) PG x{args.replicas}"
        results.append(postgres_config(label, args.replicas, postgres, folder / "pgn", args))
        search = slot_search(postgres, args.bookings, args.samples) if args.bookings else {}
    return report(results, search, args, about, time.perf_counter() - started)


def main() -> None:
    args = options()
    for sig in (signal.SIGINT, signal.SIGTERM):  # even if started with SIGINT ignored
        signal.signal(sig, _interrupt)
    folder = Path(tempfile.mkdtemp(prefix="ep-bench-replicated-"))
    folder.chmod(0o711)  # the throwaway PostgreSQL's user reaches its directory inside
    try:
        text = run(args, folder)
    except (BenchError, ClusterError, psycopg.Error) as exc:
        raise SystemExit(f"bench.replicated failed: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(
            "bench.replicated: interrupted; everything it started is stopped"
        ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    publish(text, RESULTS, "`python -m bench.replicated` results", write=not args.no_write)


if __name__ == "__main__":
    main()
