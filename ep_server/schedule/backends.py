"""Choosing the booking ledger from ``[schedule]``: a SQLite file for one EP
process, or a PostgreSQL database shared by any number of replicas.

Errors come out as :class:`~ep_server.errors.StartupError` with messages
an operator can act on, naming where the ledger is (a PostgreSQL DSN
without its password, never the password itself).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from ep_server.config import ScheduleSettings, is_postgres_uri
from ep_server.errors import StartupError
from ep_server.schedule.ledger import Ledger, LedgerUnavailable

__all__ = ["describe_ledger", "migrate_ledger", "open_ledger"]


def open_ledger(
    settings: ScheduleSettings, pools: Mapping[str, int], *, migrate: bool = True
) -> Ledger:
    """The ledger ``settings.ledger`` names, open. A PostgreSQL ledger's
    schema is created when missing (with ``migrate``); one older or newer
    than this code is refused.

    :raises StartupError: when it cannot be opened, saying why.
    """
    horizon = timedelta(days=settings.horizon_days)
    announce_after = timedelta(seconds=settings.announce_retry_after)
    if settings.postgres:
        import psycopg

        from ep_server.schedule.postgres import PostgresLedger

        try:
            return PostgresLedger(
                settings.ledger,
                pools,
                horizon,
                connections=settings.ledger_connections,
                migrate=migrate,
                announce_after=announce_after,
            )
        except LedgerUnavailable as exc:
            raise StartupError(f"schedule.ledger: {exc.detail}") from None
        except psycopg.Error as exc:  # refused by the database: no privilege, say
            raise StartupError(
                f"schedule.ledger: {describe_ledger(settings.ledger)}: {_first_line(exc)}"
            ) from None
    from ep_server.schedule.sqlite import SQLiteLedger

    try:
        if settings.ledger != ":memory:":
            Path(settings.ledger).parent.mkdir(parents=True, exist_ok=True)
        return SQLiteLedger(
            settings.ledger, pools, horizon, settings.synchronous, announce_after=announce_after
        )
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        raise StartupError(f"schedule.ledger: cannot open {settings.ledger}: {exc}") from exc


def migrate_ledger(settings: ScheduleSettings) -> str:
    """Create or upgrade the ledger's schema ahead of serving; what was done.

    :raises StartupError: when the ledger cannot be reached, or its schema
        is newer than this code.
    """
    where = describe_ledger(settings.ledger)
    if not settings.postgres:
        from ep_server.schedule.sqlite_file import SCHEMA_VERSION

        # Opening a SQLite ledger creates or upgrades its file.
        open_ledger(settings, {}).close()
        return f"ledger {where}: schema version {SCHEMA_VERSION}"
    import psycopg

    from ep_server.schedule.postgres_schema import migrate

    try:
        with psycopg.connect(settings.ledger, connect_timeout=10) as conn:
            before, after = migrate(conn)
    except psycopg.OperationalError as exc:
        raise StartupError(f"schedule.ledger: cannot reach {where}: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise StartupError(f"schedule.ledger: {where}: {_first_line(exc)}") from None
    if before == after:
        return f"ledger {where}: schema version {after}, already current"
    return f"ledger {where}: schema upgraded from version {before} to {after}"


def describe_ledger(ledger: str) -> str:
    """Where a ``[schedule] ledger`` value points, safe to log."""
    if is_postgres_uri(ledger):
        from ep_server.schedule.postgres_pool import describe_dsn

        return describe_dsn(ledger)
    return ledger


def _first_line(exc: BaseException) -> str:
    """What the database said, in one line (its own error, never the DSN)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
