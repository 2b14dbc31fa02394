"""A throwaway PostgreSQL server: its own data directory, its own port on
127.0.0.1, trust authentication, removed with the cluster's directory.

It uses the machine's PostgreSQL programs (Debian's
``/usr/lib/postgresql/<version>/bin``, the newest there, or ``pg_config
--bindir``) but none of its clusters or configuration: ``initdb`` makes a
fresh cluster, and ``postgres`` runs in the foreground as a child of the tool.
Run as root, both run as the ``postgres`` user, since they refuse root.
Durability is off (``fsync``, ``synchronous_commit``): nothing here outlives
the cluster.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path

from tools.cluster.processes import Child, ClusterError, run, wait_until

__all__ = ["ThrowawayPostgres", "find_bindir"]

#: The superuser and database made for the ledger.
USER = "ep"
DATABASE = "ep"


def find_bindir() -> Path:
    """Where ``initdb``, ``postgres`` and ``pg_isready`` are.

    :raises ClusterError: when PostgreSQL's server programs are not installed.
    """
    versions = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    found = sorted(
        versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)]
    )
    if found:
        return found[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise ClusterError(
        "PostgreSQL's server programs (initdb, postgres) are not installed: "
        "apt-get install postgresql"
    )


class ThrowawayPostgres:
    """A PostgreSQL server in ``folder`` (which must not exist yet),
    listening on 127.0.0.1:``port``."""

    def __init__(self, folder: Path, port: int, logs: Path) -> None:
        self.folder = folder
        self.logs = logs
        self.bindir = find_bindir()
        self.port = port
        self.user = "postgres" if os.geteuid() == 0 else None
        self.server: Child | None = None

    @property
    def dsn(self) -> str:
        """The ledger's connection URI (no password: trust authentication)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        """initdb, start, wait until it accepts connections, create the database.

        :raises ClusterError: naming the step that failed and its log.
        """
        self._make_folder()
        data = self.folder / "data"
        run(
            [str(self.bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            self.logs / "initdb.log", timeout=120, user=self.user,
        )  # fmt: skip
        self.serve()
        run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
             DATABASE],
            self.logs / "createdb.log", timeout=60,
        )  # fmt: skip

    def serve(self) -> None:
        """Start the server on the cluster made by :meth:`start` and wait
        until it accepts connections: after :meth:`stop`, this starts it
        again on the same data and port, as a restart of the database does.

        :raises ClusterError: when it exits or is not ready within 60 s.
        """
        self.server = Child(
            "postgres",
            [str(self.bindir / "postgres"), "-D", str(self.folder / "data"), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            self.logs / "postgres.log", user=self.user,
        )  # fmt: skip
        wait_until(self._accepting, "PostgreSQL", seconds=60, step=0.2, alive=self.server.check)

    def _make_folder(self) -> None:
        self.folder.mkdir(mode=0o700)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)

    def _accepting(self) -> bool:
        probe = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        try:
            return subprocess.run(probe, timeout=5, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, write a checkpoint,
        stop; what was committed stays); SIGKILL after 30 s. The data stays
        until the folder is removed: :meth:`serve` starts it again."""
        if self.server is not None:
            self.server.stop(signal.SIGINT, timeout=30)
