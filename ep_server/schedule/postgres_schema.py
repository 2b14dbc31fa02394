"""The PostgreSQL ledger's schema: numbered versions and the steps between them.

Where
    Every table lives in the schema the connection's ``search_path`` names
    first (``current_schema()``; PostgreSQL's default is ``public``), so one
    database can hold several sites' ledgers, and each test its own.

Versions
    ``STEPS[i]`` takes the schema from version ``i`` to ``i + 1``; version 0
    is "no ledger tables yet", and :data:`SCHEMA_VERSION` is ``len(STEPS)``.
    ``ep_schema`` records each version applied. A step is never edited once
    released: a change is a new step, so every older database upgrades
    through the same statements (``tests/schedule/test_postgres_schema.py``
    upgrades from every earlier version and compares the result with a
    schema created from nothing).

Tables (version 1)
    ``ep_offers`` and ``ep_bookings``: the columns of the SQLite ledger's
    tables (times in integer microseconds since the Unix epoch; needs,
    service infos and extras as ``jsonb``); each has a GiST index on its
    slot, ``int8range(start_us, end_us)``, for "which holds overlap this
    stretch of time" (only BOOKED bookings hold), and ``offer_id`` is
    unique among bookings, so an offer becomes at most one booking.
    ``ep_state``: one integer per key: ``clock`` (the ledger's clock, which
    never runs backwards), ``purge_due`` (when expired offers are next
    purged), ``pools`` (present once the site's pools are stored).
    ``ep_pools``: the site's pools (name, capacity), stored by the first
    replica; every later one must configure the same.

Version 2
    ``ep_bookings.announced`` and ``announce_due_us``: what was announced
    of each booking to its plugin, and when any replica may announce what
    is left (see :meth:`~ep_server.schedule.ledger.Ledger.due_announcements`).

Version 3
    ``ep_offersets`` and ``ep_offerset_offers``: the offer sets of
    :meth:`~ep_server.schedule.ledger.Ledger.save_offerset` (the document
    as ``jsonb``) and the offers each one holds.

Migrating
    :func:`migrate` runs in one transaction under an advisory lock (per
    database and schema), so replicas starting together migrate once: the
    others wait, then find the schema current.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import psycopg

from ep_server.errors import ConfigError, StartupError

__all__ = [
    "SCHEMA_VERSION",
    "STEPS",
    "SchemaMismatch",
    "check_pools",
    "lock_key",
    "lock_keys",
    "migrate",
    "require_current",
    "schema_version",
]

_VERSION_1 = (
    """CREATE TABLE ep_schema (
        version integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE ep_state (
        key text PRIMARY KEY CHECK (key IN ('clock', 'purge_due', 'pools')),
        value bigint NOT NULL
    )""",
    """CREATE TABLE ep_pools (
        name text PRIMARY KEY,
        capacity bigint NOT NULL CHECK (capacity >= 0)
    )""",
    """CREATE TABLE ep_offers (
        id text PRIMARY KEY,
        ask_id text NOT NULL,
        owner text NOT NULL,
        plugin text NOT NULL,
        servicetype text NOT NULL,
        serviceinfo jsonb NOT NULL,
        start_us bigint NOT NULL,
        end_us bigint NOT NULL CHECK (end_us > start_us),
        need jsonb NOT NULL,
        expire_us bigint NOT NULL
    )""",
    "CREATE INDEX ep_offers_sibling ON ep_offers (owner, ask_id)",
    "CREATE INDEX ep_offers_expire ON ep_offers (expire_us)",
    "CREATE INDEX ep_offers_slot ON ep_offers USING gist (int8range(start_us, end_us))",
    """CREATE TABLE ep_bookings (
        id text PRIMARY KEY,
        offer_id text NOT NULL UNIQUE,
        owner text NOT NULL,
        plugin text NOT NULL,
        servicetype text NOT NULL,
        serviceinfo jsonb NOT NULL,
        start_us bigint NOT NULL,
        end_us bigint NOT NULL CHECK (end_us > start_us),
        need jsonb NOT NULL,
        state smallint NOT NULL,
        create_us bigint NOT NULL,
        cancel_us bigint,
        extra jsonb NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX ep_bookings_owner ON ep_bookings (owner, start_us)",
    "CREATE INDEX ep_bookings_slot ON ep_bookings USING gist (int8range(start_us, end_us))"
    " WHERE state = 1",
    "INSERT INTO ep_state (key, value) VALUES ('clock', -9223372036854775808), ('purge_due', 0)",
)

#: What was announced of each booking: ``announced`` (0 nothing, 1 its
#: booking, 2 its cancellation too) and, while something is left to
#: announce, ``announce_due_us``: when any replica may announce it. Bookings
#: made before are taken as announced (by the code of their time).
_VERSION_2 = (
    """ALTER TABLE ep_bookings
        ADD COLUMN announced smallint NOT NULL DEFAULT 0 CHECK (announced BETWEEN 0 AND 2),
        ADD COLUMN announce_due_us bigint""",
    "UPDATE ep_bookings SET announced = CASE WHEN state = 2 THEN 2 ELSE 1 END",
    "CREATE INDEX ep_bookings_announce ON ep_bookings (announce_due_us)"
    " WHERE announce_due_us IS NOT NULL",
)

#: Offer sets: what the HTTP door's ExecutionBroker routes remember of an
#: Ask (the document it wrote), and which offers each one holds; the links
#: go with their offer set.
_VERSION_3 = (
    """CREATE TABLE ep_offersets (
        id text PRIMARY KEY,
        owner text NOT NULL,
        create_us bigint NOT NULL,
        expire_us bigint NOT NULL,
        document jsonb NOT NULL
    )""",
    "CREATE INDEX ep_offersets_expire ON ep_offersets (expire_us)",
    """CREATE TABLE ep_offerset_offers (
        offer_id text PRIMARY KEY,
        offerset_id text NOT NULL REFERENCES ep_offersets (id) ON DELETE CASCADE,
        position integer NOT NULL
    )""",
    "CREATE INDEX ep_offerset_offers_set ON ep_offerset_offers (offerset_id)",
)

#: The statements of each step: ``STEPS[i]`` upgrades version ``i`` to ``i + 1``.
STEPS: tuple[tuple[str, ...], ...] = (_VERSION_1, _VERSION_2, _VERSION_3)
#: The version this code reads and writes.
SCHEMA_VERSION = len(STEPS)


class SchemaMismatch(StartupError):
    """The ledger's schema is not the version this code knows: newer (run a
    newer ep-server) or older (run ``ep-server migrate``)."""


def lock_key(conn: psycopg.Connection[Any], purpose: str) -> int:
    """The advisory lock key for ``purpose`` in this connection's database
    and schema (see :func:`lock_keys`)."""
    return lock_keys(conn, purpose)[0]


def lock_keys(conn: psycopg.Connection[Any], *purposes: str) -> list[int]:
    """The advisory lock keys for ``purposes`` in this connection's
    database and schema: advisory locks are per database, so two ledgers in
    two schemas of one database never share a key.

    :raises SchemaMismatch: when the ``search_path`` names no existing schema.
    """
    row = conn.execute(
        "SELECT current_database(), current_schema(), current_setting('search_path')"
    ).fetchone()
    if row is None or row[1] is None:
        path = row[2] if row else "?"
        raise SchemaMismatch(f"the ledger's search_path ({path}) names no existing schema")
    return [
        int.from_bytes(
            hashlib.sha256(f"ep-server {purpose} {row[0]}.{row[1]}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        for purpose in purposes
    ]


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The schema's version: 0 when there are no ledger tables.

    Whether ``ep_schema`` exists is read from the catalog tables with the
    statement's own snapshot, not looked up by name (``to_regclass``): a
    name lookup is answered from the connection's catalog cache, which
    hears of tables made by others only when a transaction starts or a
    table is locked. A replica that found no schema, began its migration
    and waited there for another's would still miss the tables just made."""
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_tables"
        " WHERE schemaname = current_schema() AND tablename = 'ep_schema')"
    ).fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM ep_schema").fetchone()
    return int(row[0]) if row else 0


def migrate(
    conn: psycopg.Connection[Any], steps: tuple[tuple[str, ...], ...] = STEPS
) -> tuple[int, int]:
    """Create or upgrade the schema to ``len(steps)``, in one transaction
    under the schema's migration lock; returns (version before, after).
    Migrating a current schema changes nothing.

    :raises SchemaMismatch: when the schema is newer than ``len(steps)``.
    """
    target = len(steps)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(conn, "migrate"),))
        found = schema_version(conn)
        if found > target:
            raise SchemaMismatch(
                f"the ledger's schema is version {found}, newer than this ep-server's "
                f"{target}: run a newer ep-server"
            )
        for version in range(found, target):
            for statement in steps[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO ep_schema (version) VALUES (%s)", (version + 1,))
    return found, target


def require_current(conn: psycopg.Connection[Any], *, create: bool) -> None:
    """Check the schema is this code's version, creating it first when
    there is none and ``create``.

    :raises SchemaMismatch: when it is newer, older, or missing (and not
        ``create``).
    """
    found = schema_version(conn)
    if found == 0 and create:
        found = migrate(conn)[1]
    if found > SCHEMA_VERSION:
        raise SchemaMismatch(
            f"the ledger's schema is version {found}, newer than this ep-server's "
            f"{SCHEMA_VERSION}: run a newer ep-server"
        )
    if found < SCHEMA_VERSION:
        raise SchemaMismatch(
            f"the ledger's schema is version {found}, older than this ep-server's "
            f"{SCHEMA_VERSION}: run `ep-server migrate` first"
        )


def check_pools(conn: psycopg.Connection[Any], pools: Mapping[str, int], key: int) -> None:
    """Store ``pools`` when the site has none stored yet (its first
    replica), under the advisory lock ``key``; otherwise refuse pools that
    differ from the stored ones.

    :raises ConfigError: naming each pool that differs, stored and configured.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        if conn.execute("SELECT value FROM ep_state WHERE key = 'pools'").fetchone() is None:
            conn.cursor().executemany(
                "INSERT INTO ep_pools (name, capacity) VALUES (%s, %s)", list(pools.items())
            )
            conn.execute("INSERT INTO ep_state (key, value) VALUES ('pools', %s)", (len(pools),))
            return
        stored = dict(conn.execute("SELECT name, capacity FROM ep_pools").fetchall())
    differ = [
        f"{name} (stored {stored.get(name, 'none')}, configured {pools.get(name, 'none')})"
        for name in sorted(set(stored) | set(pools))
        if stored.get(name) != pools.get(name)
    ]
    if differ:
        raise ConfigError(
            "schedule.pools: differ from the pools this site's ledger stores: " + "; ".join(differ)
        )
