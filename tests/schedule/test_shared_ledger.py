"""An EP on a PostgreSQL ledger, on a real server: the health service
follows the ledger (NOT_SERVING for the EP service while the database cannot
be reached, the server itself still SERVING), calls that need the ledger
say UNAVAILABLE with a retry delay meanwhile, and all is well again once the
database is back. And ``ep-server migrate`` from the command line."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import quote

import grpc
import pytest
from fake_plugins.common import FakeSource
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from schedule.ledgers import POSTGRES, postgres_connect
from schedule.pg_relay import Relay
from schedule.rpc_site import DOCKER, Booker, Clock, accept, ask_as, reason_of, tokens_file, who

from ep_server.errors import StartupError
from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.schedule.backends import open_ledger
from ep_server.schedule.postgres_schema import SCHEMA_VERSION
from ep_server.server import SERVICE_NAME, start_server
from ep_server.testing import build_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status_of(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def until(channel: grpc.aio.Channel, service: str, wanted: int, seconds: float) -> float:
    """Seconds until ``service`` reports ``wanted`` (fails past ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await status_of(channel, service) == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    pytest.fail(f"{service!r} did not turn {wanted} within {seconds}s")


async def test_health_and_calls_follow_a_shared_ledger(pg_store, tmp_path):
    where = conninfo_to_dict(POSTGRES)
    relay = Relay((where.get("host", "127.0.0.1"), int(where.get("port", 5432))))
    dsn = as_uri(pg_store.dsn, port=relay.port)
    config = {
        "plugins": {"deadline": 3.0},
        "auth": {"tokens_file": str(tokens_file(tmp_path))},
        "schedule": {"ledger": dsn, "pools": {"cores": 8, "memory": "16GiB"}},
    }
    settings = build_settings(config)
    registry = load_registry(settings, detect_host(), [FakeSource("booker", Booker())])
    server = await start_server(settings, registry, Clock())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ExecutionPlannerServiceStub(channel)
    cut = False
    try:
        assert await status_of(channel, SERVICE_NAME) == SERVING
        first = await ask_as(stub, "alice", cores=2)
        assert first.responseword == pb.YES
        relay.down()
        cut = True
        took = await until(channel, SERVICE_NAME, NOT_SERVING, 10)
        assert took < 5
        assert await status_of(channel, "") == SERVING  # alive: nothing to restart
        plain = await stub.Ask(pb.AskRequest(tasktype=DOCKER), metadata=who("alice"), timeout=5)
        assert plain.responseword == pb.YES  # an Ask without a schedule needs no ledger
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await accept(stub, first.offers[0].id, timeout=15)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(info.value) == "LEDGER_UNAVAILABLE"
        assert "try again later" in info.value.details()
        assert "password" not in info.value.details()
        relay.up()
        cut = False
        await until(channel, SERVICE_NAME, SERVING, 10)
        booked = await accept(stub, first.offers[0].id, timeout=15)
        assert booked.booking.state == pb.BOOKING_STATE_BOOKED
    finally:
        if cut:
            relay.up()  # so that the server's shutdown finds its ledger
        await channel.close()
        await server.shutdown(0)
        relay.down()


def as_uri(dsn: str, port: int | None = None) -> str:
    """A key=value DSN as the postgresql:// URI ``[schedule] ledger`` takes."""
    params = conninfo_to_dict(dsn)
    options = quote(str(params.get("options", "")))
    user, host = params.get("user", "postgres"), params.get("host", "127.0.0.1")
    port = port or params.get("port", 5432)
    return f"postgresql://{user}@{host}:{port}/{params['dbname']}?options={options}"


def run_migrate(ledger: str) -> subprocess.CompletedProcess[str]:
    env = {"EP_SCHEDULE__LEDGER": ledger, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "ep_server", "migrate"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_migrate_creates_the_schema_once_and_says_so(pg_store):
    uri = as_uri(pg_store.dsn)
    first = run_migrate(uri)
    assert first.returncode == 0, first.stderr
    assert f"schema upgraded from version 0 to {SCHEMA_VERSION}" in first.stdout
    again = run_migrate(uri)
    assert again.returncode == 0, again.stderr
    assert f"schema version {SCHEMA_VERSION}, already current" in again.stdout


def test_an_unreachable_ledger_is_named_without_its_password():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run_migrate(f"postgresql://ep:s3cret-pw@127.0.0.1:{port}/ep")
    assert result.returncode == 1
    assert f"port={port}" in result.stderr
    assert "127.0.0.1" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_a_role_that_may_not_create_the_schema_is_refused_in_one_line(pg_store):
    """The database's own refusal (no privilege), as a start-up error naming
    the ledger: exit 1 and one line, never a traceback."""
    role = f"ep_test_{uuid.uuid4().hex[:8]}"
    with postgres_connect() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        grant = sql.SQL("GRANT USAGE ON SCHEMA {} TO {}")  # but not CREATE
        admin.execute(grant.format(sql.Identifier(pg_store.schema), sql.Identifier(role)))
    try:
        where = conninfo_to_dict(as_uri(pg_store.dsn))
        ledger = as_uri(pg_store.dsn).replace(f"//{where.get('user', 'postgres')}@", f"//{role}@")
        result = run_migrate(ledger)
        assert result.returncode == 1, result.stderr
        assert "permission denied" in result.stderr
        assert "Traceback" not in result.stderr
        settings = build_settings({"schedule": {"ledger": ledger, "pools": {"cores": 8}}})
        with pytest.raises(StartupError, match="permission denied"):
            open_ledger(settings.schedule, {"cores": 8})
    finally:
        with postgres_connect() as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
