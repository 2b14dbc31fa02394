"""PostgreSQL ledger benchmark: held placements and accepts per second with
one ledger and with several in separate processes (replicas on one
schema), and the slot search with many bookings loaded.

Run: ``.venv/bin/python -m bench.postgres_ledger`` (``--help`` for the
knobs). Needs the PostgreSQL at ``--dsn``; each part runs in a schema of
its own, dropped afterwards. Prints its results; writes no file.

Throughput
    Each process opens one :class:`PostgresLedger` with ``--connections``
    connections and runs as many threads (as the server does, one per
    connection). Phase 1, ``--seconds`` long: every thread places held
    offers for Asks like those of bench/booking.py (8 cores + 32 GiB, a
    one-day start window uniform over the year, 2-4 h, up to 3 offers) on
    a site of 1024 cores and 4 TiB, keeping each Ask's first offer. Phase
    2: every thread accepts its kept offers, for at most ``--seconds``.
    Rates are operations over the phase's wall time (all processes start
    each phase together); latencies are ``perf_counter`` around one ledger
    call. Afterwards the final state is checked in SQL
    (``postgres_rows.OVERBOOKED``): the overbooked instants must be 0.

Search
    ``--bookings`` bookings generated as bench/booking.py generates them
    (start uniform over a year, 1-8 h, 1-16 cores, 4 GiB per core) are
    copied straight into the tables (checked not to overbook, in SQL), then
    ``--samples`` searches over random one-day windows: ``place`` with
    hold=False (the search alone), ``place`` held (search and one
    transaction; the offers are rejected afterwards, untimed), and
    ``earliest`` for 512 cores + 2 TiB.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from bench.booking import LARGE, NOW, POOLS, SMALL, one_day, workload
from bench.harness import machine, median, percentile
from ep_server.schedule.ledger import Candidate, HeldOffer, Placement, to_us
from ep_server.schedule.postgres import PostgresLedger
from ep_server.schedule.postgres_rows import OVERBOOKED

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def schema(dsn: str) -> Iterator[str]:
    """A new schema, dropped afterwards; yields the DSN that uses it."""
    name = f"ep_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(dsn, options=f"-csearch_path={name}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def ask(owner: str, ask_id: str, rng: random.Random, hold: bool = True) -> Placement:
    day = NOW + timedelta(minutes=rng.randrange(364 * 24 * 60))
    candidate = Candidate("bench", "svc", {}, SMALL)
    return Placement(
        owner,
        ask_id,
        (candidate,),
        one_day(day),
        ttl=timedelta(hours=1),
        max_outstanding=10**9,
        hold=hold,
    )


# --- Throughput -----------------------------------------------------------------------


def replica(
    dsn: str, n: int, connections: int, seconds: float, barrier: Barrier, out: Queue[Any]
) -> None:
    """One process: a ledger, ``connections`` threads, both phases."""
    ledger = PostgresLedger(dsn, POOLS, connections=connections)
    kept: list[list[HeldOffer]] = [[] for _ in range(connections)]
    times: dict[str, list[float]] = {"place": [], "accept": []}
    lock = threading.Lock()

    def run(phase: str, t: int) -> None:
        rng = random.Random(n * 1000 + t)
        mine: list[float] = []
        deadline = time.perf_counter() + seconds
        todo = list(kept[t])
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if phase == "place":
                offers = ledger.place(ask(f"r{n}t{t}", f"a{i}", rng), NOW)
                kept[t].extend(offers[:1])
            elif todo:
                offer = todo.pop()
                ledger.accept(offer.id, offer.owner, NOW)
            else:
                break
            mine.append((time.perf_counter() - started) * 1000)
            i += 1
        with lock:
            times[phase].extend(mine)

    for phase in ("place", "accept"):
        threads = [threading.Thread(target=run, args=(phase, t)) for t in range(connections)]
        barrier.wait()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        barrier.wait()
    ledger.close()
    out.put(times)


def throughput(dsn: str, replicas: int, connections: int, seconds: float) -> dict[str, Any]:
    """Both phases with ``replicas`` processes on one new schema."""
    with schema(dsn) as where:
        PostgresLedger(where, POOLS, connections=1).close()  # creates the schema once
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(replicas + 1)
        out: Queue[Any] = ctx.Queue()
        procs = [
            ctx.Process(target=replica, args=(where, n, connections, seconds, barrier, out))
            for n in range(replicas)
        ]
        for proc in procs:
            proc.start()
        walls: dict[str, float] = {}
        for phase in ("place", "accept"):
            barrier.wait()
            started = time.perf_counter()
            barrier.wait()
            walls[phase] = time.perf_counter() - started
        results = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        with psycopg.connect(where, autocommit=True) as conn:
            bad = conn.execute(OVERBOOKED, {"clock": to_us(NOW)}).fetchall()
            row = conn.execute("SELECT count(*) FROM ep_bookings").fetchone()
    found: dict[str, Any] = {"overbooked": len(bad), "bookings": row[0] if row else 0}
    for phase in ("place", "accept"):
        values = [v for r in results for v in r[phase]]
        found[phase] = (len(values) / walls[phase], median(values), percentile(values, 0.99))
    return found


# --- Search ---------------------------------------------------------------------------


def fill(dsn: str, count: int) -> float:
    """``count`` bookings copied into the tables; the seconds it took."""
    started = time.perf_counter()
    PostgresLedger(dsn, POOLS, connections=1).close()
    columns = "id, offer_id, owner, plugin, servicetype, serviceinfo, start_us, end_us, need,"
    columns += " state, create_us"
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY ep_bookings ({columns}) FROM STDIN") as copy:
            for i, b in enumerate(workload(count, random.Random(count))):
                start = to_us(b.start)
                end = start + b.duration // timedelta(microseconds=1)
                row = (f"b{i}", f"o{i}", f"owner{i % 500}", "bench", "svc", Jsonb({}))
                copy.write_row((*row, start, end, Jsonb(b.need), 1, to_us(NOW)))
        conn.execute("ANALYZE")
        if conn.execute(OVERBOOKED, {"clock": to_us(NOW)}).fetchall():
            raise SystemExit("the generated bookings overbook the site")
    return time.perf_counter() - started


def search(dsn: str, count: int, samples: int) -> dict[str, list[float]]:
    seconds = fill(dsn, count)
    print(f"{count} bookings copied in {seconds:.1f} s")
    ledger = PostgresLedger(dsn, POOLS, connections=1)
    rng = random.Random(7)
    times: dict[str, list[float]] = {"place small": [], "place small held": [], "earliest": []}
    for i in range(samples):
        state = rng.getstate()
        started = time.perf_counter()
        ledger.place(ask("asker", f"s{i}", rng, hold=False), NOW)
        times["place small"].append((time.perf_counter() - started) * 1000)
        rng.setstate(state)  # the same window, held
        started = time.perf_counter()
        offers = ledger.place(ask("asker", f"h{i}", rng), NOW)
        times["place small held"].append((time.perf_counter() - started) * 1000)
        for offer in offers:
            ledger.reject(offer.id, offer.owner, NOW)
        day = NOW + timedelta(minutes=rng.randrange(364 * 24 * 60))
        started = time.perf_counter()
        ledger.earliest(LARGE, timedelta(hours=2), day, NOW)
        times["earliest"].append((time.perf_counter() - started) * 1000)
    ledger.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--replicas", default="1,3")
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with psycopg.connect(args.dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
    server = f"PostgreSQL {version[0] if version else '?'}"
    print(f"Machine: {machine(server)}")
    print(f"synchronous_commit={commit[0] if commit else '?'}; {args.connections} connections")
    print(
        "| replicas | held placements/s | p50 ms | p99 ms | accepts/s | p50 ms | p99 ms |"
        " bookings | overbooked instants |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for replicas in (int(r) for r in args.replicas.split(",")):
        found = throughput(args.dsn, replicas, args.connections, args.seconds)
        place, accept = found["place"], found["accept"]
        print(
            f"| {replicas} | {place[0]:.0f} | {place[1]:.2f} | {place[2]:.2f} | "
            f"{accept[0]:.0f} | {accept[1]:.2f} | {accept[2]:.2f} | {found['bookings']} | "
            f"{found['overbooked']} |"
        )
    if args.bookings:
        with schema(args.dsn) as where:
            times = search(where, args.bookings, args.samples)
        print(f"| bookings | measurement | median ms | p90 ms |  ({args.samples} samples)")
        print("| ---: | --- | ---: | ---: |")
        for name, values in times.items():
            print(
                f"| {args.bookings} | {name} | {median(values):.3f} | "
                f"{percentile(values, 0.9):.3f} |"
            )


if __name__ == "__main__":
    main()
