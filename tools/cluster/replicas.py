"""The EP replicas: one site's config, a token to book with, ``ep-server
migrate`` and ``ep-server serve`` processes sharing the PostgreSQL ledger.

Every replica reads the same config file; only its port and its metrics
port differ (``--listen`` and ``EP_METRICS__LISTEN``). The config pins the
host's cores and memory and the booking pools, so that every replica
describes and books the same site, and loads only the built-in ``static``
plugin, so that the answers do not depend on the plugins installed here.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.cluster.processes import Child, run

__all__ = ["Replica", "SiteFiles", "healthy", "migrate", "start_replica", "write_site"]

#: The service each replica's health is asked for; SERVING once it takes calls.
SERVICE = "ivoa.ep.v1.ExecutionPlannerService"
TASKTYPE = "uri://docker-container"
SERVICETYPE = "uri://docker-uws"

_CONFIG = """\
# One site served by several replicas (tools/cluster/replicas.py).
[server]
grace_period = 5.0

[host]
cores = 8
memory = "16GiB"

[plugins]
allow = ["static"]

[[plugin.static.claims]]
tasktype = "{tasktype}"
servicetype = "{servicetype}"
serviceinfo = {{ endpoint = "http://example.org/dkuws" }}
cores = 8
memory = "16GiB"

[auth]
tokens_file = "tokens.toml"

[schedule]
ledger = "{ledger}"
pools = {{ cores = 8, memory = "16GiB" }}

[logging]
access_log = true
"""


@dataclass(frozen=True)
class SiteFiles:
    """The site's config, and a token it accepts (also in ``token_file``)."""

    config: Path
    token_file: Path
    token: str


def write_site(folder: Path, ledger: str) -> SiteFiles:
    """Write ``ep.toml``, ``tokens.toml`` (the token's SHA-256 only) and
    ``token`` (the token itself, for ``ep --token-file``) into ``folder``."""
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    (folder / "tokens.toml").write_text(f'[tokens.cluster]\ntoken_sha256 = "{digest}"\n')
    token_file = folder / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    config = folder / "ep.toml"
    text = _CONFIG.format(tasktype=TASKTYPE, servicetype=SERVICETYPE, ledger=ledger)
    config.write_text(text)
    return SiteFiles(config, token_file, token)


def _ep_server() -> list[str]:
    """``ep-server`` from the tool's own installation."""
    return [sys.executable, "-m", "ep_server"]


def migrate(config: Path, log: Path) -> None:
    """``ep-server migrate``: create the ledger's schema before any replica
    starts (a replica would create a missing one itself, too)."""
    run([*_ep_server(), "migrate", "--config", str(config)], log, timeout=120)


@dataclass
class Replica:
    """One ``ep-server serve`` process."""

    name: str
    port: int
    metrics_port: int | None
    child: Child

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_replica(
    name: str,
    config: Path,
    log: Path,
    port: int,
    metrics_port: int | None,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> Replica:
    """Start ``ep-server serve`` on 127.0.0.1:``port``, with its metrics
    on ``metrics_port`` (None: none), as ``workers`` processes on that port
    (``--workers``, which needs no metrics port), with ``env`` added to
    its environment."""
    argv = [*_ep_server(), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
    if workers != 1:
        argv += ["--workers", str(workers)]
    # Each replica's HTTP door on a free port of its own (HAProxy fronts gRPC).
    environ = {"EP_HTTP__LISTEN": "127.0.0.1:0", **(env or {})}
    if metrics_port is not None:
        environ["EP_METRICS__LISTEN"] = f"127.0.0.1:{metrics_port}"
    return Replica(name, port, metrics_port, Child(name, argv, log, env=environ))


def healthy(port: int) -> bool:
    """Whether the replica on ``port`` says SERVING for the EP service."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
