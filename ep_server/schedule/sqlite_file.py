"""The SQLite ledger's file: its schema, and opening it.

The file is in WAL mode. ``synchronous=FULL`` (the default) makes an
acknowledged call survive power loss; ``NORMAL`` survives a crash of the
process (not of the machine) and is faster. The schema is versioned with
``PRAGMA user_version``, created on first open and upgraded step by step
(:data:`STEPS`) on the first open by newer code.

The file is opened with ``locking_mode=EXCLUSIVE``: the ledger's index of
holds lives in its process, so a second process writing the same file would
make it stale and overbook. Holding the lock for the connection's life makes
a second opener fail ("database is locked") instead. The OS drops the lock
when the process dies, so a restart after ``kill -9`` works.

Besides offers and bookings, the ``meta`` table keeps the ledger's clock
(key ``clock``): see :mod:`ep_server.schedule.sqlite`; ``offersets`` and
``offerset_offers`` (version 3) keep the offer sets of
:meth:`~ep_server.schedule.ledger.Ledger.save_offerset`.
"""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA_VERSION", "STEPS", "connect"]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_VERSION_1 = (
    """CREATE TABLE offers (
        id TEXT PRIMARY KEY,
        ask_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        plugin TEXT NOT NULL,
        servicetype TEXT NOT NULL,
        serviceinfo TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER NOT NULL,
        need TEXT NOT NULL,
        expire_us INTEGER NOT NULL
    )""",
    "CREATE INDEX offers_sibling ON offers (owner, ask_id)",
    "CREATE INDEX offers_expire ON offers (expire_us)",
    """CREATE TABLE bookings (
        id TEXT PRIMARY KEY,
        offer_id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        plugin TEXT NOT NULL,
        servicetype TEXT NOT NULL,
        serviceinfo TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER NOT NULL,
        need TEXT NOT NULL,
        state INTEGER NOT NULL,
        create_us INTEGER NOT NULL,
        cancel_us INTEGER,
        extra TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX bookings_owner ON bookings (owner, start_us)",
)
#: The ledger's clock (``meta``; files of version 1 may already have it) and
#: what was announced of each booking (bookings made before are taken as
#: announced: they were, by the code of their time, or never will be).
_VERSION_2 = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "ALTER TABLE bookings ADD COLUMN announced INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE bookings ADD COLUMN announce_due_us INTEGER",
    "UPDATE bookings SET announced = CASE WHEN state = 2 THEN 2 ELSE 1 END",
    "CREATE INDEX bookings_announce ON bookings (announce_due_us)"
    " WHERE announce_due_us IS NOT NULL",
)
#: Offer sets (what the HTTP door's ExecutionBroker routes remember of an
#: Ask): the document the door wrote, and which offers each one holds.
_VERSION_3 = (
    """CREATE TABLE offersets (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        create_us INTEGER NOT NULL,
        expire_us INTEGER NOT NULL,
        document TEXT NOT NULL
    )""",
    "CREATE INDEX offersets_expire ON offersets (expire_us)",
    """CREATE TABLE offerset_offers (
        offer_id TEXT PRIMARY KEY,
        offerset_id TEXT NOT NULL,
        position INTEGER NOT NULL
    )""",
    "CREATE INDEX offerset_offers_set ON offerset_offers (offerset_id)",
)
#: ``STEPS[i]`` upgrades a file of version ``i`` to ``i + 1``; a step is never
#: edited once released.
STEPS: tuple[tuple[str, ...], ...] = (_VERSION_1, _VERSION_2, _VERSION_3)
SCHEMA_VERSION = len(STEPS)


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """Open the file (exclusive, WAL, the given durability) and its schema.

    :raises ValueError: for an unknown ``synchronous``.
    :raises RuntimeError: when another process has the file open, or its
        schema is newer than this code's.
    """
    if synchronous.upper() not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=2.0)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        _migrate(db)
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc):
            raise RuntimeError(f"ledger {path} is in use by another process") from exc
        raise
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Create the schema on first open, or upgrade it through each step.
    Always writes once, so the exclusive lock is taken now rather than at
    the first booking."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"ledger schema {version} is newer than {SCHEMA_VERSION}")
        for step in STEPS[version:]:
            for statement in step:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
