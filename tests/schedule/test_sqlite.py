"""What only the SQLite ledger (ep_server.schedule.sqlite) promises: its
file (WAL, ``synchronous``, schema version and upgrade, the exclusive lock),
its clock kept in the file, the purge of expired offers, and surviving a
SIGKILL. The ledger contract itself is in test_ledger_contract.py.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from schedule.ledgers import (
    ALL_TIME,
    GIB,
    POOLS,
    T0,
    H,
    M,
    ask,
    assert_within,
    at,
    book,
    file_holds,
    prepare_offers,
)

from ep_server.model import BookingState, Slot
from ep_server.schedule.ledger import OfferExpired, OfferNotFound
from ep_server.schedule.sqlite import SCHEMA_VERSION, SQLiteLedger
from ep_server.schedule.sqlite_file import STEPS

CHILD = Path(__file__).with_name("ledger_crash_child.py")


def _us(when: datetime) -> int:
    return int((when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def _saved_clock(path: Path) -> int | None:
    with closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
    return None if row is None else int(row[0])


# --- The file ------------------------------------------------------------------------------


def test_a_new_file_is_wal_with_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    led = SQLiteLedger(path, POOLS)
    book(led, 0, 4, cores=8)
    led.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("synchronous", "pragma"), [("OFF", 0), ("normal", 1), ("FULL", 2), ("Extra", 3)]
)
def test_synchronous_sets_the_pragma_in_any_case(
    tmp_path: Path, synchronous: str, pragma: int
) -> None:
    led = SQLiteLedger(tmp_path / "ledger.db", POOLS, synchronous=synchronous)
    try:
        assert led._db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    finally:
        led.close()


def test_an_unknown_synchronous_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteLedger(":memory:", POOLS, synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteLedger(tmp_path / "ledger.db", POOLS, synchronous="FULL; DROP TABLE offers")
    assert not (tmp_path / "ledger.db").exists()


def test_one_thread_no_ping_needed_and_described_by_its_path(tmp_path: Path) -> None:
    led = SQLiteLedger(tmp_path / "ledger.db", POOLS)
    try:
        assert led.threads == 1
        led.ping()
        assert led.describe() == str(tmp_path / "ledger.db")
    finally:
        led.close()


def test_a_second_opener_is_refused(tmp_path: Path) -> None:
    led = SQLiteLedger(tmp_path / "ledger.db", POOLS)
    path = str(tmp_path / "ledger.db")
    script = f"from ep_server.schedule.sqlite import SQLiteLedger; SQLiteLedger({path!r}, {{}})"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "in use by another process" in result.stderr
    led.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path, POOLS).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteLedger(path, POOLS)


@pytest.mark.parametrize("with_meta", [False, True], ids=["first-files", "later-files"])
def test_a_schema_1_file_is_upgraded_and_its_bookings_taken_as_announced(
    tmp_path: Path, with_meta: bool
) -> None:
    """Files of version 1 (the first ones without the ``meta`` table) open
    at the current version; their bookings were announced, or never will
    be, by the code that made them, so none is due."""
    path = tmp_path / "ledger.db"
    with closing(sqlite3.connect(path)) as db, db:
        for statement in STEPS[0]:
            db.execute(statement)
        if with_meta:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        for id_, state in (("kept", 1), ("dropped", 2)):
            db.execute(
                "INSERT INTO bookings (id, offer_id, owner, plugin, servicetype, serviceinfo,"
                " start_us, end_us, need, state, create_us) VALUES (?, ?, 'alice', 'p', 's',"
                " '{}', ?, ?, '{\"cores\": 8}', ?, ?)",
                (id_, f"o-{id_}", _us(at(0)), _us(at(4)), state, _us(T0)),
            )
        db.execute("PRAGMA user_version = 1")

    led = SQLiteLedger(path, POOLS)
    assert [b.id for b in led.bookings("alice", T0)] == ["dropped", "kept"]
    assert led.peak("cores", Slot(at(0), at(4)), T0) == 8  # the BOOKED one holds
    booking = book(led, 4, 5, cores=8)  # a new one is due until announced; the old ones never
    assert [d.booking.id for d in led.due_announcements(T0 + 1000 * H, 10)] == [booking.id]
    led.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(STEPS)


# --- The clock and the purge ---------------------------------------------------------------


def test_every_write_saves_the_clock_and_a_reopen_resumes_from_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    led = SQLiteLedger(path, POOLS)
    led.place(ask((1, 1), ttl=5 * M), T0 + 10 * M)
    led.peak("cores", ALL_TIME, T0 + 20 * M)  # reads write nothing
    led.close()
    assert _saved_clock(path) == _us(T0 + 10 * M)

    led = SQLiteLedger(path, POOLS)
    led.place(ask((2, 2), ask_id="b"), T0)  # a clock set back: the saved one wins
    led.close()
    assert _saved_clock(path) == _us(T0 + 10 * M)


def test_expired_offers_are_purged_later() -> None:
    led = SQLiteLedger(":memory:", POOLS, purge_after=H)
    (offer,) = led.place(ask((1, 1), ttl=5 * M), T0)
    led.place(ask((1, 1), ask_id="b", hold=False), T0 + 30 * M)  # not yet: expired 25 min ago
    with pytest.raises(OfferExpired):
        led.accept(offer.id, "alice", T0 + 30 * M)
    led.place(ask((3, 3), ask_id="c"), T0 + 2 * H)
    with pytest.raises(OfferNotFound):
        led.accept(offer.id, "alice", T0 + 2 * H)
    led.close()


# --- A crash ---------------------------------------------------------------------------------


def _read_acks(proc: subprocess.Popen[str], wanted: int, deadline: float) -> list[str]:
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None
    selector.register(proc.stdout, selectors.EVENT_READ)
    while len(lines) < wanted and time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    selector.close()
    return lines


def test_sigkill_during_accepts_loses_no_acknowledged_booking(tmp_path: Path) -> None:
    pools = {"cores": 64, "memory": 256 * GIB}
    path = tmp_path / "ledger.db"
    offers = prepare_offers(lambda: SQLiteLedger(path, pools, synchronous="NORMAL"), 400)
    spec = tmp_path / "offers.json"
    spec.write_text(json.dumps({"pools": pools, "offers": [[o.id, o.owner] for o in offers]}))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), T0.isoformat(), str(spec)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = _read_acks(proc, 1 + 40, time.monotonic() + 30)  # "ready" + 40 bookings
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    acked = [line.split() for line in lines[1:] + rest.splitlines() if line not in ("done", "")]
    print(f"{len(acked)} of {len(offers)} accepts acknowledged before SIGKILL")
    assert lines[0] == "ready"
    assert len(acked) >= 40

    assert_within(file_holds(path, T0), pools)  # also PRAGMA integrity_check
    led = SQLiteLedger(path, pools)
    for booking_id, owner in acked:
        assert led.get(booking_id, owner, T0).state is BookingState.BOOKED
    for offer in offers:  # each offer is now exactly one booking or still an offer
        mine = led.bookings(offer.owner, T0)
        assert len(mine) <= 1
        if not mine:
            assert led.accept(offer.id, offer.owner, T0)[0].offer_id == offer.id
    for pool, cap in pools.items():
        assert led.peak(pool, ALL_TIME, T0) <= cap
    led.close()
