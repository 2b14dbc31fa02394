"""The PostgreSQL ledger's schema (ep_server.schedule.postgres_schema):
created from nothing, upgraded from every earlier version to the same
schema, migrating a current one changes nothing, a newer one is refused
naming both versions, a failed step changes nothing, and replicas
migrating at once migrate once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from schedule.ledgers import POOLS, PostgresStore, postgres_connect

from ep_server.schedule.postgres import PostgresLedger
from ep_server.schedule.postgres_schema import (
    SCHEMA_VERSION,
    STEPS,
    SchemaMismatch,
    lock_key,
    migrate,
    require_current,
    schema_version,
)

#: The real steps and one more, as a later release would ship them.
LATER = (*STEPS, ("ALTER TABLE ep_bookings ADD COLUMN note text NOT NULL DEFAULT ''",))


@pytest.fixture
def conn(pg_store: PostgresStore) -> Iterator[psycopg.Connection[Any]]:
    with postgres_connect(pg_store.dsn) as connection:
        yield connection


def catalog(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """The schema's tables, columns, indexes, constraints and state keys,
    with the schema's own name taken out (two stores are two schemas)."""
    schema = conn.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema() ORDER BY 1",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2",
        "state": "SELECT key, value FROM ep_state ORDER BY key",
        "versions": "SELECT version FROM ep_schema ORDER BY version",
    }
    found = {name: conn.execute(query).fetchall() for name, query in queries.items()}
    return {
        name: [tuple(str(v).replace(f"{schema[0]}.", "") for v in row) for row in rows]
        for name, rows in found.items()
    }


def test_a_schema_is_created_from_nothing(conn: psycopg.Connection[Any]) -> None:
    assert schema_version(conn) == 0
    assert migrate(conn) == (0, SCHEMA_VERSION)
    assert schema_version(conn) == SCHEMA_VERSION
    tables = {table for table, *_ in catalog(conn)["columns"]}
    assert tables == {
        "ep_schema", "ep_state", "ep_pools", "ep_offers", "ep_bookings",
        "ep_offersets", "ep_offerset_offers",
    }  # fmt: skip
    assert [key for key, _ in catalog(conn)["state"]] == ["clock", "purge_due"]


@pytest.mark.parametrize("start", range(SCHEMA_VERSION))
def test_an_upgrade_from_every_earlier_version_gives_the_schema_made_from_nothing(
    start: int, conn: psycopg.Connection[Any]
) -> None:
    assert migrate(conn, STEPS[:start]) == (0, start)
    assert migrate(conn) == (start, SCHEMA_VERSION)
    fresh = PostgresStore()
    try:
        with postgres_connect(fresh.dsn) as other:
            migrate(other)
            assert catalog(conn) == catalog(other)
    finally:
        fresh.close()


def test_an_upgrade_applies_each_later_step_once_and_keeps_the_data(
    conn: psycopg.Connection[Any],
) -> None:
    migrate(conn)
    conn.execute("INSERT INTO ep_pools VALUES ('cores', 16)")
    assert migrate(conn, LATER) == (SCHEMA_VERSION, SCHEMA_VERSION + 1)
    assert migrate(conn, LATER) == (SCHEMA_VERSION + 1, SCHEMA_VERSION + 1)
    assert conn.execute("SELECT note FROM ep_bookings").fetchall() == []
    assert conn.execute("SELECT * FROM ep_pools").fetchall() == [("cores", 16)]
    versions = conn.execute("SELECT version FROM ep_schema ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 2)]


def test_bookings_made_before_version_2_are_taken_as_announced(
    conn: psycopg.Connection[Any],
) -> None:
    assert migrate(conn, STEPS[:1]) == (0, 1)
    for id_, state in (("kept", 1), ("dropped", 2)):
        conn.execute(
            "INSERT INTO ep_bookings (id, offer_id, owner, plugin, servicetype, serviceinfo,"
            " start_us, end_us, need, state, create_us)"
            " VALUES (%s, %s, 'alice', 'p', 's', '{}', 0, 10, '{}', %s, 0)",
            (id_, f"o-{id_}", state),
        )
    migrate(conn, STEPS[:2])
    rows = conn.execute(
        "SELECT id, announced, announce_due_us FROM ep_bookings ORDER BY id"
    ).fetchall()
    assert rows == [("dropped", 2, None), ("kept", 1, None)]


def test_migrating_a_current_schema_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    migrate(conn)
    before = catalog(conn)
    assert migrate(conn) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert catalog(conn) == before


def test_a_newer_schema_is_refused_naming_both_versions(
    conn: psycopg.Connection[Any], pg_store: PostgresStore
) -> None:
    migrate(conn, LATER)
    newer = rf"version {SCHEMA_VERSION + 1}, newer than this ep-server's {SCHEMA_VERSION}"
    with pytest.raises(SchemaMismatch, match=newer):
        migrate(conn)
    with pytest.raises(SchemaMismatch, match=newer):
        require_current(conn, create=True)
    with pytest.raises(SchemaMismatch, match=newer):
        PostgresLedger(pg_store.dsn, POOLS, connections=1)
    assert schema_version(conn) == SCHEMA_VERSION + 1


def test_an_older_or_missing_schema_is_refused_unless_created(
    conn: psycopg.Connection[Any], pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SchemaMismatch, match=r"version 0, older .* run `ep-server migrate`"):
        PostgresLedger(pg_store.dsn, POOLS, connections=1, migrate=False)
    assert schema_version(conn) == 0
    migrate(conn)
    monkeypatch.setattr("ep_server.schedule.postgres_schema.SCHEMA_VERSION", SCHEMA_VERSION + 1)
    older = rf"version {SCHEMA_VERSION}, older than this ep-server's {SCHEMA_VERSION + 1}"
    with pytest.raises(SchemaMismatch, match=older):
        require_current(conn, create=True)


def test_a_failing_step_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    migrate(conn)
    before = catalog(conn)
    broken = (*STEPS, ("ALTER TABLE ep_bookings ADD COLUMN note text", "SELECT 1 / 0"))
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(conn, broken)
    assert catalog(conn) == before


def test_a_search_path_naming_no_schema_is_refused() -> None:
    with postgres_connect() as conn:
        conn.execute("SET search_path = ep_no_such_schema")
        with pytest.raises(SchemaMismatch, match="ep_no_such_schema"):
            migrate(conn)


def test_a_migration_waits_for_one_in_progress_and_then_changes_nothing(
    conn: psycopg.Connection[Any], pg_store: PostgresStore
) -> None:
    results: list[tuple[int, int]] = []
    with postgres_connect(pg_store.dsn) as other:
        waiter = other.info.backend_pid
        thread = threading.Thread(target=lambda: results.append(migrate(other)))
        with conn.transaction():
            # This connection is a replica in the middle of migrating: it
            # holds the migration lock while the other one starts.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(conn, "migrate"),))
            thread.start()
            deadline = time.monotonic() + 10
            while not _waits_for_a_lock(conn, waiter):
                assert time.monotonic() < deadline, "the second migration never waited"
                time.sleep(0.01)
            assert migrate(conn) == (0, SCHEMA_VERSION)
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert results == [(SCHEMA_VERSION, SCHEMA_VERSION)]
    assert schema_version(conn) == SCHEMA_VERSION


def test_a_replica_that_found_no_schema_before_waiting_finds_the_one_made_meanwhile(
    conn: psycopg.Connection[Any], pg_store: PostgresStore
) -> None:
    errors: list[BaseException] = []
    with postgres_connect(pg_store.dsn) as other:
        waiter = other.info.backend_pid

        def start() -> None:
            # What a replica's start does: look, find no schema, create it.
            try:
                require_current(other, create=True)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=start)
        with conn.transaction():
            # Another replica creates the schema meanwhile.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(conn, "migrate"),))
            thread.start()
            deadline = time.monotonic() + 10
            while not _waits_for_a_lock(conn, waiter):
                assert time.monotonic() < deadline, "the second replica never waited"
                time.sleep(0.01)
            assert migrate(conn) == (0, SCHEMA_VERSION)
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert errors == []
    assert schema_version(conn) == SCHEMA_VERSION


def test_replicas_migrating_at_once_migrate_once(pg_store: PostgresStore) -> None:
    barrier = threading.Barrier(4)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            with postgres_connect(pg_store.dsn) as conn:
                barrier.wait(timeout=10)
                results.append(migrate(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert errors == []
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3


def _waits_for_a_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
    ).fetchone()
    return bool(row and row[0])
