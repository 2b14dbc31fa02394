"""The cluster's throwaway PostgreSQL server: made, stopped and started
again on the same data and port, as a restart does; then removed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tools.cluster.postgres import ThrowawayPostgres
from tools.cluster.processes import free_ports


@pytest.fixture
def folder() -> Iterator[Path]:
    """A directory the ``postgres`` user can reach (pytest's are closed to it)."""
    made = Path(tempfile.mkdtemp(prefix="ep-test-postgres-"))
    made.chmod(0o711)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def test_a_stopped_server_serves_its_data_again_on_the_same_port(folder: Path) -> None:
    server = ThrowawayPostgres(folder / "postgres", free_ports(1)[0], folder)
    try:
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        server.stop()
        assert server.server is not None
        assert not server.server.running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.dsn, connect_timeout=2)
        server.serve()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
    finally:
        server.stop()
