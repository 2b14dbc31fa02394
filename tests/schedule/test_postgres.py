"""What only the PostgreSQL ledger (ep_server.schedule.postgres) promises:
several ledgers (replicas) on one schema share one truth (pools, clock,
accept's and cancel's flags, the purge) and never overbook together; the
slot search and plugins' refusals run outside any lock; a database that
cannot be reached is LedgerUnavailable, and a ledger recovers when it is
back; where the ledger lives is said without its password. The ledger
contract itself is in test_ledger_contract.py.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from schedule.ledgers import (
    ALL_TIME,
    GIB,
    POOLS,
    POSTGRES,
    T0,
    H,
    M,
    PostgresStore,
    ask,
    assert_within,
    at,
    book,
    postgres_connect,
)
from schedule.pg_relay import Relay

from ep_server.errors import ConfigError
from ep_server.model import Booking, Slot
from ep_server.schedule import postgres_pool, postgres_rows
from ep_server.schedule.ledger import (
    HeldOffer,
    LedgerUnavailable,
    OfferExpired,
    OfferNotFound,
    TooManyOffers,
    to_us,
)
from ep_server.schedule.postgres import PostgresLedger
from ep_server.schedule.postgres_pool import CHECK_AFTER_IDLE, describe_dsn
from ep_server.schedule.postgres_schema import lock_key

#: Every loop here ends by this many seconds, whatever happens.
BOUND = 60.0


@pytest.fixture
def replicas(pg_store: PostgresStore) -> Callable[..., list[PostgresLedger]]:
    """``replicas(n, **kw)``: n ledgers on one schema, each with its own
    pool (4 connections unless said), closed with the store."""

    def open_(n: int, pools: dict[str, int] = POOLS, **kw: Any) -> list[PostgresLedger]:
        kw.setdefault("connections", 4)
        ledgers = [PostgresLedger(pg_store.dsn, pools, **kw) for _ in range(n)]
        pg_store.opened.extend(ledgers)
        return ledgers

    return open_


def run_all(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Run each target on a thread of its own; the errors they raised."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BOUND)
        assert not thread.is_alive(), "a thread did not finish in time"
    return errors


def overbooked(dsn: str, now: datetime) -> list[tuple[Any, ...]]:
    """Instants where a pool is overbooked, computed in SQL from the tables."""
    with postgres_connect(dsn) as conn:
        return conn.execute(postgres_rows.OVERBOOKED, {"clock": _us(now)}).fetchall()


def _us(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=T0.tzinfo)) // timedelta(microseconds=1)


# --- One truth across replicas ----------------------------------------------------


def test_the_first_replica_stores_the_pools_and_one_that_differs_is_refused(
    replicas: Callable[..., list[PostgresLedger]], pg_store: PostgresStore
) -> None:
    replicas(1, POOLS)
    replicas(1, dict(POOLS))  # the same pools: fine
    differ = {"cores": 8, "memory": POOLS["memory"], "fpgas": 1}
    with pytest.raises(ConfigError) as info:
        PostgresLedger(pg_store.dsn, differ, connections=1)
    message = str(info.value)
    assert "cores (stored 16, configured 8)" in message
    assert "fpgas (stored none, configured 1)" in message
    assert "gpus (stored 2, configured none)" in message
    assert "memory" not in message
    with postgres_connect(pg_store.dsn) as conn:
        assert dict(conn.execute("SELECT name, capacity FROM ep_pools").fetchall()) == POOLS


def test_an_offer_expired_through_one_replica_is_expired_through_all(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    one, other = replicas(2, {"cores": 1})
    (first,) = one.place(ask((1, 1), shortest=1, ask_id="a1", ttl=5 * M), T0)
    # A write through one replica at T0 + 10 min: the first offer has expired.
    (second,) = one.place(ask((1, 1), shortest=1, ask_id="a2", owner="bob"), T0 + 10 * M)
    # The other replica, given an earlier now, still reads the shared clock.
    with pytest.raises(OfferExpired):
        other.accept(first.id, "alice", T0)
    assert other.peak("cores", ALL_TIME, T0) == 1
    assert other.accept(second.id, "bob", T0)[1]
    assert other.peak("cores", ALL_TIME, T0) == 1


def test_accept_creates_once_across_replicas(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    ledgers = replicas(3)
    offers = [ledgers[0].place(ask((i, i), ask_id=f"a{i}"), T0)[0] for i in range(4)]
    barrier = threading.Barrier(30)
    results: list[tuple[HeldOffer, Booking, bool]] = []

    def accept(led: PostgresLedger) -> None:
        barrier.wait(timeout=BOUND)
        for offer in offers:
            results.append((offer, *led.accept(offer.id, "alice", T0)))

    assert run_all([lambda led=led: accept(led) for led in ledgers for _ in range(10)]) == []
    for offer in offers:
        mine = [(booking, created) for o, booking, created in results if o is offer]
        assert len(mine) == 30
        assert len({booking.id for booking, _ in mine}) == 1
        assert sum(created for _, created in mine) == 1


def test_cancel_cancels_once_across_replicas(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    ledgers = replicas(3)
    booking = book(ledgers[0], 1, 2, cores=16)
    barrier = threading.Barrier(30)
    changed: list[bool] = []

    def cancel(led: PostgresLedger) -> None:
        barrier.wait(timeout=BOUND)
        changed.append(led.cancel(booking.id, "alice", T0)[1])

    assert run_all([lambda led=led: cancel(led) for led in ledgers for _ in range(10)]) == []
    assert sorted(changed) == [False] * 29 + [True]


def test_the_purge_is_done_by_one_replica(
    replicas: Callable[..., list[PostgresLedger]], pg_store: PostgresStore
) -> None:
    ledgers = replicas(4, purge_after=H, connections=1)
    for i in range(5):
        ledgers[i % 4].place(ask((1, 1), ask_id=f"a{i}", owner=f"o{i}", ttl=5 * M), T0)
    kept = ledgers[0].place(ask((1, 1), ask_id="kept", ttl=2 * H), T0)
    later = T0 + 2 * H  # the five expired at T0 + 5 min, over an hour ago
    barrier = threading.Barrier(4)
    done: list[int | None] = []

    def purge(led: PostgresLedger) -> None:
        barrier.wait(timeout=BOUND)
        done.append(led.purge(later))

    assert run_all([lambda led=led: purge(led) for led in ledgers]) == []
    assert sorted(done, key=lambda n: n is None) == [5, None, None, None]
    with postgres_connect(pg_store.dsn) as conn:
        assert conn.execute("SELECT id FROM ep_offers").fetchall() == [(kept[0].id,)]
    assert [led.purge(later + 9 * M) for led in ledgers] == [None] * 4  # not due yet
    assert ledgers[1].purge(later + 10 * M) == 0


# --- Never overbooking, together --------------------------------------------------------


def test_replicas_placing_and_accepting_at_once_never_overbook(
    replicas: Callable[..., list[PostgresLedger]], pg_store: PostgresStore
) -> None:
    pools = {"cores": 16, "memory": 64 * GIB}
    ledgers = replicas(3, pools, connections=4)
    barrier = threading.Barrier(12)
    deadline = time.monotonic() + BOUND
    created: list[str] = []
    seen: list[tuple[str, bool]] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        barrier.wait(timeout=BOUND)
        for i in range(15):
            assert time.monotonic() < deadline
            cores = rng.randint(1, 8)
            placement = ask(
                (0, 24),
                need={"cores": cores, "memory": cores * 4 * GIB},
                owner=f"client{n}",
                ask_id=f"ask{n}-{i}",
                shortest=rng.randint(1, 4),
                max_offers=2,
                max_outstanding=50,
            )
            offers = rng.choice(ledgers).place(placement, T0)
            if not offers:
                continue
            booking, new = rng.choice(ledgers).accept(rng.choice(offers).id, f"client{n}", T0)
            seen.append((booking.id, new))
            if new:
                created.append(booking.id)
            if rng.random() < 0.2:
                rng.choice(ledgers).cancel(booking.id, f"client{n}", T0)

    assert run_all([lambda n=n: client(n) for n in range(12)]) == []
    assert len(created) == len(set(created)) == len(seen) > 0
    assert overbooked(pg_store.dsn, T0) == []
    holds = pg_store.holds(T0)
    assert_within(holds, pools)
    for pool, capacity in pools.items():
        assert ledgers[0].peak(pool, ALL_TIME, T0) <= capacity


def test_the_cap_on_outstanding_offers_holds_across_replicas(
    replicas: Callable[..., list[PostgresLedger]], pg_store: PostgresStore
) -> None:
    ledgers = replicas(3, connections=2)
    barrier = threading.Barrier(6)
    refused: list[BaseException] = []

    def place(led: PostgresLedger, n: int) -> None:
        barrier.wait(timeout=BOUND)
        try:
            led.place(ask((0, 48), ask_id=f"a{n}", max_offers=3, max_outstanding=4), T0)
        except TooManyOffers as exc:
            refused.append(exc)

    assert run_all([lambda n=n: place(ledgers[n % 3], n) for n in range(6)]) == []
    with postgres_connect(pg_store.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM ep_offers WHERE owner = 'alice'").fetchone()
    assert row == (4,)
    assert refused


def test_a_slot_taken_while_searching_is_not_held_and_the_search_runs_again(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    one, other = replicas(2, {"cores": 16}, lock_timeout=1.0)
    taken: list[Booking] = []

    def refuse(candidate: object, slot: Slot) -> bool:
        # While one replica searches (and asks its plugins), the other
        # books the very slot it is about to offer; it never waits for a lock.
        if not taken:
            taken.append(book(other, 0, 2, owner="bob", cores=16))
        return False

    (offer,) = one.place(ask((0, 10), need={"cores": 16}, max_offers=1, refuse=refuse), T0)
    assert taken[0].slot == Slot(at(0), at(2))
    assert offer.slot == Slot(at(2), at(4))
    assert one.peak("cores", ALL_TIME, T0) == 16


def test_a_slot_starting_now_is_held_though_another_replica_moved_the_clock_on(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    one, other = replicas(2)

    def refuse(candidate: object, slot: Slot) -> bool:
        # A write through another replica, a second later, while this one
        # searches: the shared clock is now past the slot's start.
        other.place(ask((0, 10), ask_id="later", owner="bob"), T0 + timedelta(seconds=1))
        return False

    offers = one.place(ask((-1, 10), max_offers=1, refuse=refuse), T0)
    assert [o.slot.start for o in offers] == [T0]


def test_reads_take_no_lock_and_a_lock_held_too_long_is_unavailable(
    replicas: Callable[..., list[PostgresLedger]], pg_store: PostgresStore
) -> None:
    (led,) = replicas(1, lock_timeout=0.3)
    booking = book(led, 0, 2, cores=4)
    with postgres_connect(pg_store.dsn) as other, other.transaction():
        # Another replica stuck inside a change that can add a hold.
        other.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(other, "place"),))
        assert led.get(booking.id, "alice", T0) == booking
        assert led.bookings("alice", T0) == [booking]
        assert led.peak("cores", ALL_TIME, T0) == 4
        assert led.earliest({"cores": 16}, H, T0, T0) == Slot(at(2), at(3))
        assert led.place(ask((0, 10), ask_id="look", hold=False), T0)
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as info:
            led.place(ask((0, 10), ask_id="held"), T0)
        assert time.monotonic() - started < 5
        assert "lock timeout" in info.value.detail
    assert led.place(ask((0, 10), ask_id="held"), T0)


def test_an_accept_that_cannot_take_the_lock_changes_nothing_and_succeeds_when_asked_again(
    replicas: Callable[..., list[PostgresLedger]], pg_store: PostgresStore
) -> None:
    (led,) = replicas(1, lock_timeout=0.3, connections=1)
    offer = led.place(ask((0, 10), ask_id="a"), T0)[0]
    with postgres_connect(pg_store.dsn) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(other, "place"),))
        with pytest.raises(LedgerUnavailable) as info:
            led.accept(offer.id, "alice", T0 + M)
        assert "lock timeout" in info.value.detail
        # The clock did not move: the accept's whole script was rolled back.
        assert other.execute(postgres_rows.READ_CLOCK).fetchone() == (to_us(T0),)
        # Its one connection is back in the pool, outside any transaction.
        assert led.bookings("alice", T0) == []
    booking, created = led.accept(offer.id, "alice", T0 + M)
    assert created
    assert booking.offer_id == offer.id
    assert led.accept(offer.id, "alice", T0 + M) == (booking, False)


def test_statements_prepared_on_a_connection_before_a_failed_call_are_taken_as_they_are(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    """A call that prepared some of the scripts' statements on a connection
    and then failed leaves them prepared: the next call on that connection
    prepares the rest and goes on."""
    (led,) = replicas(1, connections=1)
    offer = led.place(ask((0, 10), ask_id="a"), T0)[0]
    with led._db.connection() as conn:
        conn.execute(postgres_rows.PREPARE[0])  # as if the rest had failed
    booking, created = led.accept(offer.id, "alice", T0)
    assert created
    assert led.cancel(booking.id, "alice", T0)[1]


def test_every_connection_has_the_timeouts_set(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    (led,) = replicas(1, connections=2, lock_timeout=0.25, idle_in_transaction_timeout=3)
    with led._db.connection() as conn:
        row = conn.execute(
            "SELECT current_setting('lock_timeout'),"
            " current_setting('idle_in_transaction_session_timeout')"
        ).fetchone()
    assert row == ("250ms", "3s")
    assert led.threads == 2


# --- Reaching the database ---------------------------------------------------------


def test_an_unreachable_database_is_unavailable_in_time_naming_the_host_not_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{port}/test"
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as info:
        PostgresLedger(dsn, POOLS, connections=1, timeout=1)
    assert time.monotonic() - started < 10
    detail = info.value.detail
    assert f"port={port}" in detail
    assert "127.0.0.1" in detail
    assert "refused" in detail.lower()
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value.__dict__)
    assert "s3cret" not in shown
    assert info.value.message == "the booking ledger is unavailable now; try again later"
    assert info.value.retry_after > 0


def test_describe_names_the_database_without_its_password(pg_store: PostgresStore) -> None:
    # Trust authentication: the server never asks for the password given.
    led = PostgresLedger(make_conninfo(pg_store.dsn, password="s3cret"), POOLS, connections=1)
    pg_store.opened.append(led)
    led.ping()
    host = conninfo_to_dict(POSTGRES).get("host", "")
    assert f"host={host}" in led.describe()
    assert pg_store.schema in led.describe()
    assert "s3cret" not in led.describe()
    uri = describe_dsn("postgresql://ep:s3cret@db.example:5433/site?application_name=ep")
    assert uri == "user=ep dbname=site host=db.example port=5433 application_name=ep"
    with pytest.raises(ConfigError) as info:
        describe_dsn("postgresql://u:s3cret@h/d?nonsense=1")
    assert "s3cret" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.fixture
def relayed(pg_store: PostgresStore) -> Iterator[tuple[Relay, str]]:
    """A relay in front of the test server, and the store's DSN through it."""
    target = conninfo_to_dict(POSTGRES)
    relay = Relay((str(target.get("host", "127.0.0.1")), int(target.get("port", 5432))))
    yield relay, make_conninfo(pg_store.dsn, host="127.0.0.1", port=str(relay.port))
    relay.down()


def test_a_database_gone_is_unavailable_and_the_ledger_recovers_when_it_is_back(
    relayed: tuple[Relay, str], pg_store: PostgresStore
) -> None:
    relay, dsn = relayed
    led = PostgresLedger(dsn, POOLS, connections=2, timeout=1)
    pg_store.opened.append(led)
    booking = book(led, 0, 2, cores=4)
    relay.down()
    for call in (
        led.ping,
        lambda: led.place(ask((0, 10), ask_id="down"), T0),
        lambda: led.accept("any", "alice", T0),
        lambda: led.get(booking.id, "alice", T0),
        lambda: led.cancel(booking.id, "alice", T0),
    ):
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable):
            call()
        assert time.monotonic() - started < 10
    relay.up()
    deadline = time.monotonic() + BOUND
    while True:
        try:
            led.ping()
            break
        except LedgerUnavailable:
            assert time.monotonic() < deadline, "the ledger never came back"
            time.sleep(0.1)
    assert led.get(booking.id, "alice", T0) == booking  # nothing was changed meanwhile
    assert led.place(ask((0, 10), ask_id="up"), T0)


def test_while_the_last_check_found_the_database_unreachable_calls_fail_at_once(
    relayed: tuple[Relay, str], pg_store: PostgresStore
) -> None:
    relay, dsn = relayed
    led = PostgresLedger(dsn, POOLS, connections=1, timeout=5)
    pg_store.opened.append(led)
    booking = book(led, 0, 2, cores=4)
    relay.down()
    with pytest.raises(LedgerUnavailable):
        led.ping()
    started = time.monotonic()
    for call in (
        lambda: led.place(ask((0, 10), ask_id="down"), T0),
        lambda: led.accept("any", "alice", T0),
        lambda: led.get(booking.id, "alice", T0),
        lambda: led.cancel(booking.id, "alice", T0),
        lambda: led.earliest({"cores": 1}, H, T0, T0),
    ):
        with pytest.raises(LedgerUnavailable) as info:
            call()
        assert "unreachable at the last check" in info.value.detail
    # Not the 5 s each would wait for a connection that cannot come.
    assert time.monotonic() - started < 1
    relay.up()
    with pytest.raises(LedgerUnavailable):  # until a check finds it again
        led.get(booking.id, "alice", T0)
    deadline = time.monotonic() + BOUND
    while True:
        try:
            led.ping()
            break
        except LedgerUnavailable:
            assert time.monotonic() < deadline, "the ledger never came back"
            time.sleep(0.1)
    assert led.get(booking.id, "alice", T0) == booking


def terminate(name: str, expected: int | None = None) -> list[tuple[bool]]:
    """End every server process of the connections named ``name``; first
    wait (up to 10 s) until ``expected`` of them are open, since the pool
    opens its connections in the background."""
    deadline = time.monotonic() + 10
    while expected is not None and time.monotonic() < deadline:
        with postgres_connect() as admin:
            count = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        if count is not None and count[0] >= expected:
            break
        time.sleep(0.05)
    with postgres_connect() as admin:
        return admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()


def test_idle_connections_dropped_by_the_server_are_replaced_unnoticed(
    pg_store: PostgresStore,
) -> None:
    name = f"ep-test-{uuid.uuid4().hex[:8]}"
    led = PostgresLedger(make_conninfo(pg_store.dsn, application_name=name), POOLS, connections=2)
    pg_store.opened.append(led)
    booking = book(led, 0, 2, cores=4)
    assert terminate(name, expected=2) == [(True,), (True,)]
    time.sleep(CHECK_AFTER_IDLE + 0.1)
    assert led.get(booking.id, "alice", T0) == booking
    assert led.cancel(booking.id, "alice", T0)[1]


def test_a_recently_used_connection_dropped_fails_one_call_and_the_rest_are_replaced(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections used within CHECK_AFTER_IDLE are not checked before a call
    (a round trip each): the call that finds its connection dropped is
    UNAVAILABLE, and the pool then replaces every dropped one before the
    next call. (The window is widened here so that a slow machine cannot
    turn the recently used connections into checked ones.)"""
    monkeypatch.setattr(postgres_pool, "CHECK_AFTER_IDLE", 3600.0)
    name = f"ep-test-{uuid.uuid4().hex[:8]}"
    led = PostgresLedger(make_conninfo(pg_store.dsn, application_name=name), POOLS, connections=2)
    pg_store.opened.append(led)
    booking = book(led, 0, 2, cores=4)
    assert terminate(name, expected=2) == [(True,), (True,)]
    with pytest.raises(LedgerUnavailable):
        led.get(booking.id, "alice", T0)
    assert led.get(booking.id, "alice", T0) == booking
    assert led.cancel(booking.id, "alice", T0)[1]


def test_accepting_an_offer_never_made_or_another_owners_says_not_found(
    replicas: Callable[..., list[PostgresLedger]],
) -> None:
    one, other = replicas(2, connections=1)
    (offer,) = one.place(ask((0, 0)), T0)
    with pytest.raises(OfferNotFound):
        other.accept(offer.id, "bob", T0)
    with pytest.raises(OfferNotFound):
        other.accept("never-made", "alice", T0)
    assert other.accept(offer.id, "alice", T0)[1]
