"""Booking ledger benchmark: slot search and accepts, SQLite ledger.

Run: ``.venv/bin/python -m bench.booking`` (``--help`` for the knobs).

The site: one fixed pool set, 1024 cores and 4 TiB of memory. Existing
bookings (1k, 10k, 100k): start uniform over the year after "now" (whole
minutes), duration uniform 1-8 h (whole minutes), cores uniform 1-16, memory
4 GiB per core. At 100k that is about 440 cores busy on average (43 %), so
the same site simply has more of its year booked. The bookings are made
through the ledger's own interface, each a ``place`` of exactly its slot (a
start window of one instant, minimum = maximum duration) and an ``accept``
of the offer, so a booking that would overbook is refused there; the file is
filled with ``synchronous=OFF`` (the fill time is printed, not published),
then closed and opened again with the ``synchronous`` value under test,
which rebuilds the ledger's index: that open time is reported, and the
bookings are checked never to exceed the pools.

Measured, each over the same random one-day windows (uniform over the year):

  place small      an Ask for 8 cores + 32 GiB, one-day start window, 2-4 h,
                   up to 3 offers; hold=False (the search alone)
  place small held the same with hold=True in the file with synchronous=FULL
                   (search + one fsync'd transaction); the offers are
                   rejected afterwards, untimed
  place large      512 cores + 2 TiB (half the site), hold=False: often does
                   not fit at 100k, so the search walks the window
  earliest large   the "earliest slot that would fit" for the large need
                   from the window's start, over the whole horizon
  Ask RPC, held    the whole thing: an ``Ask`` with that schedule (8 cores,
                   32 GiB) over gRPC on loopback to an ep-server on the same
                   ledger file, by a caller with a token, so offers are held

Accepts per second: offers held first (one per owner), then accepted one
after another, in a file in a temporary directory, synchronous FULL and
NORMAL. Every time is ``perf_counter`` around one ledger call, this process.

Targets: place with 10k bookings under 5 ms median, and an Ask with a
schedule against 10k bookings, the whole RPC, under 5 ms median; growth
1k -> 10k -> 100k no worse than n log n. Results are appended to
bench/results-booking.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from bench.harness import (
    ROOT,
    ask_bytes,
    machine,
    median,
    new_parser,
    parse_args,
    percentile,
    publish,
    since_ms,
    timed,
    utc_stamp,
)
from ep_server.model import Schedule, Slot, Window
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.schedule.ledger import Candidate, Placement
from ep_server.schedule.sqlite import SQLiteLedger
from ep_server.server import start_server
from ep_server.testing import build_registry, build_settings

RESULTS = ROOT / "bench" / "results-booking.md"
GIB = 2**30
POOLS = {"cores": 1024, "memory": 4096 * GIB}
NOW = datetime(2030, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
SMALL = {"cores": 8, "memory": 32 * GIB}
LARGE = {"cores": 512, "memory": 2048 * GIB}
TARGET_MS = 5.0
SQLITE = f"SQLite {sqlite3.sqlite_version}"


@dataclass
class Row:
    bookings: int
    open_ms: float
    times: dict[str, list[float]]  # measurement -> milliseconds


@dataclass(frozen=True)
class Existing:
    """One existing booking of the workload."""

    start: datetime
    duration: timedelta
    need: dict[str, int]


def workload(count: int, rng: random.Random) -> list[Existing]:
    """``count`` bookings spread over the year (see the module docstring)."""
    bookings = []
    for _ in range(count):
        start = NOW + timedelta(minutes=rng.randrange(365 * 24 * 60))
        duration = timedelta(minutes=rng.randint(60, 8 * 60))
        cores = rng.randint(1, 16)
        bookings.append(Existing(start, duration, {"cores": cores, "memory": cores * 4 * GIB}))
    return bookings


def fill(path: Path, count: int) -> float:
    """Book ``count`` bookings into a new ledger file through ``place`` and
    ``accept``, with ``synchronous=OFF``; the seconds it took."""
    started = time.perf_counter()
    ledger = SQLiteLedger(path, POOLS, synchronous="OFF")
    try:
        for i, booking in enumerate(workload(count, random.Random(count))):
            schedule = exactly(booking.start, booking.duration)
            exact = placement(f"owner{i % 500}", f"fill{i}", booking.need, schedule, max_offers=1)
            offers = ledger.place(exact, NOW)
            slot = Slot(booking.start, booking.start + booking.duration)
            if not offers or offers[0].slot != slot:
                raise SystemExit(f"generated booking {i} does not fit as generated: {booking}")
            ledger.accept(offers[0].id, offers[0].owner, NOW)
    finally:
        ledger.close()
    return time.perf_counter() - started


def make_ledger(path: Path, count: int, synchronous: str) -> tuple[SQLiteLedger, float]:
    """A ledger file holding ``count`` bookings, opened with ``synchronous``;
    returns it and its open time (ms)."""
    seconds = fill(path, count)
    print(f"{count} bookings: filled in {seconds:.1f} s (place + accept, synchronous=OFF)")
    open_ms, ledger = timed(SQLiteLedger, path, POOLS, synchronous=synchronous)
    for pool, cap in POOLS.items():
        peak = ledger.peak(pool, Slot(NOW, NOW + YEAR + timedelta(days=1)), NOW)
        if peak > cap:
            raise SystemExit(f"generated bookings overbook {pool}: {peak} > {cap}")
    return ledger, open_ms


def placement(
    owner: str,
    ask_id: str,
    need: dict[str, int],
    schedule: Schedule,
    *,
    hold: bool = True,
    max_offers: int = 3,
) -> Placement:
    """A request for slots for one candidate needing ``need``."""
    candidate = Candidate("bench", "svc", {}, need)
    return Placement(owner, ask_id, (candidate,), schedule, max_offers=max_offers, hold=hold)


def one_day(day_start: datetime) -> Schedule:
    """The asks' schedule: a start within a day of ``day_start``, 2-4 hours."""
    window = Window(day_start, day_start + timedelta(days=1))
    return Schedule((window,), timedelta(hours=2), timedelta(hours=4))


def exactly(start: datetime, duration: timedelta) -> Schedule:
    """The one slot ``[start, start + duration)``."""
    return Schedule((Window(start, start),), duration, duration)


def measure(ledger: SQLiteLedger, samples: int, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    days = [NOW + timedelta(minutes=rng.randrange(364 * 24 * 60)) for _ in range(samples)]
    times: dict[str, list[float]] = {
        k: [] for k in ("place small", "place small held", "place large", "earliest large")
    }
    for i, day in enumerate(days):
        owner, ask_id, schedule = f"asker{i}", f"ask{i}", one_day(day)
        ms, _ = timed(ledger.place, placement(owner, ask_id, SMALL, schedule, hold=False), NOW)
        times["place small"].append(ms)
        ms, offers = timed(ledger.place, placement(owner, ask_id, SMALL, schedule), NOW)
        times["place small held"].append(ms)
        for offer in offers:
            ledger.reject(offer.id, offer.owner, NOW)
        ms, _ = timed(ledger.place, placement(owner, ask_id, LARGE, schedule, hold=False), NOW)
        times["place large"].append(ms)
        ms, _ = timed(ledger.earliest, LARGE, timedelta(hours=2), day, NOW)
        times["earliest large"].append(ms)
    return times


def accepts_per_second(directory: Path, synchronous: str, count: int) -> float:
    ledger, _ = make_ledger(directory / f"accept-{synchronous}.db", 1000, synchronous)
    offers = []
    for i in range(count):
        day = NOW + timedelta(days=i % 300)
        offers += ledger.place(placement(f"asker{i}", f"ask{i}", SMALL, one_day(day)), NOW)[:1]
    started = time.perf_counter()
    for offer in offers:
        ledger.accept(offer.id, offer.owner, NOW)
    elapsed = time.perf_counter() - started
    ledger.close()
    return len(offers) / elapsed


def fsync_ms(directory: Path, count: int = 100) -> float:
    """Median time of one small write + fsync here: what FULL pays per commit."""
    samples = []
    with open(directory / "fsync-probe", "wb") as probe:
        for _ in range(count):
            started = time.perf_counter()
            probe.write(b"x" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
            samples.append(since_ms(started))
    return median(samples)


def report(
    rows: list[Row], accepts: dict[str, float], samples: int, tmp: str, fsync: float
) -> list[str]:
    lines = [
        f"## {utc_stamp()}",
        "",
        f"Machine: {machine(SQLITE)}. Files in {tmp} (write+fsync there: {fsync:.2f} ms median). "
        "Site: 1024 cores, 4 TiB. Bookings: start "
        "uniform over one year, 1-8 h, 1-16 cores, 4 GiB/core. Asks: one-day start window "
        f"uniform over the year, 2-4 h, up to 3 offers; {samples} samples per cell.",
        "",
        "| bookings | open (index rebuild) ms | measurement | median ms | p90 ms |",
        "| ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        for name, values in row.times.items():
            lines.append(
                f"| {row.bookings} | {row.open_ms:.0f} | {name} | "
                f"{median(values):.3f} | {percentile(values, 0.9):.3f} |"
            )
    lines.append("")
    lines += growth(rows)
    lines.append("")
    for sync, rate in accepts.items():
        lines.append(f"- accepts per second, synchronous={sync}: **{rate:.0f}**")
    return lines


def growth(rows: list[Row]) -> list[str]:
    by_n = {row.bookings: row for row in rows}
    out = [
        "- growth: one site, so 10x the bookings is 10x the holds per day; a search "
        "costs a bisect per duration class plus a sweep of the holds near its window."
    ]
    for small, big in ((1000, 10_000), (10_000, 100_000)):
        if small not in by_n or big not in by_n:
            continue
        nlogn = big * math.log(big) / (small * math.log(small))
        for name in by_n[big].times:
            ratio = median(by_n[big].times[name]) / median(by_n[small].times[name])
            verdict = "ok" if ratio <= nlogn else "WORSE than n log n"
            out.append(
                f"- {name}: {big}/{small} = **{ratio:.2f}x** (n log n: {nlogn:.1f}x, {verdict})"
            )
    if 10_000 in by_n:
        ms = median(by_n[10_000].times["place small held"])
        met = "met" if ms < TARGET_MS else "NOT MET"
        out.append(f"- target: place (held, FULL) with 10k bookings {ms:.2f} ms < 5 ms: {met}")
        ms = median(by_n[10_000].times["Ask RPC, held"])
        met = "met" if ms < TARGET_MS else "NOT MET"
        out.append(
            f"- target: an Ask with a schedule, 10k bookings, whole RPC: "
            f"{ms:.2f} ms median < 5 ms: {met}"
        )
    return out


def grpc_asks(path: Path, samples: int) -> list[float]:
    """Milliseconds per ``Ask`` with a schedule, the whole RPC over loopback:
    an in-process ep-server on the ledger file at ``path`` (its bookings as
    made by make_ledger), a caller with a token (so offers are held), the
    static plugin claiming the task type; client and server share this
    process."""
    return asyncio.run(_grpc_asks(path, samples))


async def _grpc_asks(path: Path, samples: int) -> list[float]:
    token = "bench-token-0123456789abcdef-0123456789"
    tokens = path.with_suffix(".tokens.toml")
    digest = hashlib.sha256(token.encode()).hexdigest()
    tokens.write_text(f'[tokens.bench]\ntoken_sha256 = "{digest}"\n')
    claim = {"tasktype": "uri://bench-task", "servicetype": "uri://svc", "serviceinfo": {}}
    config = {
        "auth": {"tokens_file": str(tokens)},
        "schedule": {
            "ledger": str(path),
            "pools": {"cores": POOLS["cores"], "memory": POOLS["memory"]},
            "max_outstanding_offers": 1000,
        },
        "plugin": {"static": {"claims": [claim]}},
        "plugins": {"allow": ["static"]},
    }
    settings = build_settings(config)
    server = await start_server(settings, build_registry(settings), clock=lambda: NOW)
    rng = random.Random(7)
    times = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            ask = ask_bytes(channel)
            metadata = (("authorization", f"Bearer {token}"),)
            for i in range(samples + 20):
                request = scheduled_ask(NOW + timedelta(days=rng.randrange(364)))
                started = time.perf_counter()
                reply = await ask(request.SerializeToString(), metadata=metadata, timeout=10)
                answer = pb.AskResponse.FromString(reply)
                if i >= 20:  # the first few warm up
                    times.append(since_ms(started))
                assert answer.responseword == pb.YES or answer.reasons, answer
    finally:
        await server.shutdown(0)
    return times


def scheduled_ask(day: datetime) -> pb.AskRequest:
    request = pb.AskRequest(tasktype="uri://bench-task")
    request.resources.cores.min = SMALL["cores"]
    request.resources.memory.min = SMALL["memory"]
    window = request.schedule.windows.add()
    window.start.FromDatetime(day)
    window.end.FromDatetime(day + timedelta(days=1))
    request.schedule.min_duration.FromTimedelta(timedelta(hours=2))
    request.schedule.max_duration.FromTimedelta(timedelta(hours=4))
    return request


def main() -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--samples", type=int, default=200, help="asks per size")
    parser.add_argument("--sizes", default="1000,10000,100000", help="existing bookings")
    args = parse_args(parser, {"samples": 20, "sizes": "1000,10000"}, RESULTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ep-bench-booking-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"ledger-{n}.db"
            ledger, open_ms = make_ledger(path, n, "FULL")
            rows.append(Row(n, open_ms, measure(ledger, args.samples, seed=n)))
            ledger.close()
            rows[-1].times["Ask RPC, held"] = grpc_asks(path, args.samples)
            print(f"{n} bookings: done", flush=True)
        accepts = {
            s: accepts_per_second(Path(tmp), s, c) for s, c in (("FULL", 300), ("NORMAL", 2000))
        }
        lines = report(rows, accepts, args.samples, tmp, fsync_ms(Path(tmp)))
    text = "\n".join(lines)
    publish(text, RESULTS, "`python -m bench.booking` results", write=not args.no_write)


if __name__ == "__main__":
    main()
