"""Connecting to the PostgreSQL ledger's database: a fixed-size pool whose
connections all carry the ledger's settings, what a failure to reach the
database becomes, and the DSN as it may be logged.

Every connection is in autocommit mode (a ledger call opens a transaction
only where it writes) and set with ``lock_timeout`` (no statement waits for
a lock forever), ``statement_timeout`` (none runs for ever) and
``idle_in_transaction_session_timeout`` (a replica stopped in the middle of
a transaction does not hold its locks for long); TCP keepalives and
``tcp_user_timeout`` (unless the DSN sets them) end a call whose database
vanished from the network within seconds, not the kernel's quarter of an
hour. A connection idle for more than :data:`CHECK_AFTER_IDLE` seconds is
checked before use (one more round trip; under load connections are reused
far sooner, so busy calls pay nothing), and broken ones are replaced, not
handed out. When a call finds its connection broken, and when the database
answers again after an outage, every idle connection is checked at once,
so a server restart costs at most the calls on connections in use when it
happened or used in the second before it (those are handed out unchecked). Any
``psycopg.OperationalError`` (connection lost or refused, a lock not granted
in time, no free connection within ``timeout``) becomes
:class:`~ep_server.schedule.ledger.LedgerUnavailable`, whose detail names
the database (never the password) and says why.

While the last :meth:`LedgerPool.reach` (the health service's check, once
a second) found the database unreachable, a call fails at once rather
than wait ``timeout`` for a connection that cannot come: during an outage
each call would otherwise hold one of the ledger's few threads for that
long, and the calls queued behind them would wait longer than any
caller's deadline instead of hearing UNAVAILABLE. The calls and the health
service agree: a replica NOT_SERVING for the ledger fails calls that need it.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ep_server.errors import ConfigError
from ep_server.schedule.ledger import LedgerUnavailable

__all__ = ["LedgerPool", "describe_dsn"]

#: Seconds any one statement may run: far above any the ledger makes (a slot
#: search over 100,000 bookings takes milliseconds), so only a stuck one ends.
STATEMENT_TIMEOUT = 30.0
#: A connection idle for longer than this (seconds) is checked before use.
CHECK_AFTER_IDLE = 1.0
#: libpq settings that end a call within seconds when the database's host
#: vanishes from the network (no reset, no answer), unless the DSN sets them.
_NETWORK = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged data gives up after this
}


def describe_dsn(dsn: str) -> str:
    """The connection string without its password, safe to log.

    :raises ConfigError: when ``dsn`` is not a libpq connection string or
        URI (the message does not repeat it: it may hold a password).
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError("schedule.ledger: not a valid PostgreSQL connection URI") from None
    params.pop("password", None)
    return make_conninfo("", **params) or "PostgreSQL at libpq's defaults (PGHOST, ...)"


class LedgerPool:
    """``size`` connections to ``dsn``, opened in the background.

    :param timeout: seconds to connect, or to wait for a free connection.
    :param lock_timeout: seconds a statement may wait for a lock.
    :param idle_timeout: seconds a transaction may sit idle.
    """

    def __init__(
        self, dsn: str, *, size: int, timeout: float, lock_timeout: float, idle_timeout: float
    ) -> None:
        if size < 1:
            raise ValueError(f"connections must be at least 1, not {size}")
        #: The database, safe to log.
        self.where = describe_dsn(dsn)
        self._dsn = dsn
        self._settings = (
            f"{round(lock_timeout * 1000)}ms",
            f"{round(STATEMENT_TIMEOUT * 1000)}ms",
            f"{round(idle_timeout * 1000)}ms",
        )
        given = conninfo_to_dict(dsn)
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            self._kwargs["connect_timeout"] = max(2, math.ceil(timeout))
        if "application_name" not in given:  # how pg_stat_activity names it
            self._kwargs["application_name"] = "ep-server ledger"
        for key, value in _NETWORK.items():
            if key not in given:
                self._kwargs[key] = value
        # When each idle connection was returned (see _check).
        self._idle_since: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool = ConnectionPool(
            dsn,
            kwargs=self._kwargs,
            min_size=size,
            max_size=size,
            open=False,
            configure=self._configure,
            check=self._check,
            reset=self._returned,
            timeout=timeout,
            # A lost connection is retried in the background for a second,
            # then anew at the next call that needs one: a ledger is back
            # within about a second of its database, however long it was down.
            reconnect_timeout=1.0,
            name=f"ep-ledger {self.where}",
        )
        self._pool.open(wait=False)
        #: Set while the last reach() failed: calls fail at once meanwhile.
        self._unreachable = threading.Event()

    @contextmanager
    def first(self) -> Iterator[psycopg.Connection[Any]]:
        """The first connection, to set the ledger up; when none can be
        made, connecting once more says why (the pool only says it timed
        out)."""
        with self.unavailable("cannot open the ledger"):
            try:
                conn = self._pool.getconn()
            except PoolTimeout:
                with psycopg.connect(self._dsn, **self._kwargs):  # fails again, saying why
                    pass
                raise
        try:
            with self.unavailable("cannot open the ledger"):
                yield conn
        finally:
            self._pool.putconn(conn)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one ledger call, returned to the pool after it
        (rolled back if a transaction was left open, replaced if broken).

        :raises LedgerUnavailable: at once while the last :meth:`reach` failed.
        """
        if self._unreachable.is_set():
            raise LedgerUnavailable(f"ledger unreachable at the last check ({self.where})")
        with self.unavailable("ledger call failed"), self._pool.connection() as conn:
            try:
                yield conn
            except psycopg.OperationalError:
                if conn.broken:  # the server has likely dropped them all (a restart)
                    self._pool.check()
                raise

    def reach(self) -> None:
        """Connect afresh and ask the server one trivial question: for the
        health service, which must not wait behind busy pool connections
        (a flood of bookings is not an outage). Until the next reach that
        succeeds, a failed one makes calls fail at once (see the module's
        docstring).

        :raises LedgerUnavailable: when the server cannot be reached now.
        """
        try:
            with (
                self.unavailable("ledger unreachable"),
                psycopg.connect(self._dsn, **self._kwargs) as conn,
            ):
                conn.execute("SELECT 1")
        except LedgerUnavailable:
            self._unreachable.set()
            raise
        if self._unreachable.is_set():  # back: replace what the outage broke first
            try:
                self._pool.check()
            finally:  # a check that failed oddly must not leave every call refused
                self._unreachable.clear()

    @contextmanager
    def unavailable(self, doing: str) -> Iterator[None]:
        """Turn a failure to reach the database into LedgerUnavailable."""
        try:
            yield
        except psycopg.OperationalError as exc:
            lines = str(exc).strip().splitlines()
            reason = lines[0] if lines else type(exc).__name__
            raise LedgerUnavailable(f"{doing} ({self.where}): {reason}") from exc

    def close(self) -> None:
        self._pool.close()

    def _returned(self, conn: psycopg.Connection[Any]) -> None:
        """Back in the pool: note when, for :meth:`_check`."""
        self._idle_since[conn] = time.monotonic()

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """Before a use: a connection idle for a while may have been dropped
        by the server (a restart, an administrator): ask it. When it was,
        the others likely were too, so every idle one is checked now."""
        since = self._idle_since.get(conn)
        if since is not None and time.monotonic() - since < CHECK_AFTER_IDLE:
            return
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            self._pool.check()
            raise

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false),"
            " set_config('statement_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            self._settings,
        )
