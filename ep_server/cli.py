"""``ep-server``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import NoReturn

from ep_server.config import Settings, load_settings
from ep_server.errors import ConfigError, StartupError
from ep_server.logs import route_grpc_core_logs, setup_logging

__all__ = ["main"]


EXIT_STATUS = """\
exit status:
  0    serve: stopped cleanly (SIGTERM or SIGINT); other commands: done
  1    cannot start or do it: bad config, a busy port, an unreachable ledger
  2    usage error (bad arguments)"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ep-server")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ep-server",
        description="IVOA ExecutionPlanner server",
        epilog=EXIT_STATUS,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"ep-server {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the ExecutionPlanner gRPC API",
        description="Serve the ExecutionPlanner gRPC API until SIGTERM or SIGINT, then stop "
        "gracefully.",
        epilog=EXIT_STATUS,
        formatter_class=raw,
    )
    serve.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: $EP_CONFIG, else built-in)"
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="override [server].listen")
    serve.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="override [http].listen (the HTTP door; [http] enabled = false turns it off)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log lines at this level and above, to stderr (default INFO); "
        "[logging] format chooses text or JSON",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on one port (default 1); only they share it "
        "(SO_REUSEPORT), another ep-server on the port still fails",
    )
    migrate = sub.add_parser(
        "migrate",
        epilog=EXIT_STATUS,
        formatter_class=raw,
        help="create or upgrade the booking ledger's schema, then exit",
        description="Create or upgrade the schema of the ledger [schedule] ledger names "
        "(a PostgreSQL database, or a SQLite file), ahead of serving. Safe to run "
        "again, and from several hosts at once.",
    )
    migrate.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: $EP_CONFIG, else built-in)"
    )
    certs = sub.add_parser(
        "dev-certs",
        epilog=EXIT_STATUS,
        formatter_class=raw,
        help="write a throwaway CA, server and client certificate for trying (m)TLS",
        description="Write ca.pem, server.pem, server.key, client.pem and client.key into "
        "DIR: a CA made for the occasion (its key is not kept), a server certificate for "
        "localhost, 127.0.0.1 and ::1 (and each --host), and a client certificate for "
        "mutual TLS. Valid 30 days; for trying TLS on one machine, not for production.",
    )
    certs.add_argument(
        "dir", metavar="DIR", type=Path, help="folder to write into (made if missing)"
    )
    certs.add_argument(
        "--host", action="append", default=[], metavar="NAME",
        help="another name or IP address the server certificate covers; repeat for more",
    )  # fmt: skip
    certs.add_argument(
        "--client-name", default="ep-dev-client", metavar="NAME",
        help="the client certificate's common name, the identity mTLS gives (default %(default)s)",
    )  # fmt: skip
    return parser


def run() -> NoReturn:
    """The ``ep-server`` console script: :func:`main`, then exit with its code.
    gRPC's own log lines go through our logging (its format, its level)."""
    route_grpc_core_logs()
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except Exception:  # a bug: say so, with the traceback, and exit 1
        logging.getLogger(__name__).exception("ep-server failed")
        code = 1
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ep-server`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return _migrate(args.config)
    if args.command == "dev-certs":
        return _dev_certs(args.dir, args.host, args.client_name)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    overrides = {"server.listen": args.listen} if args.listen else {}
    if args.http_listen:
        overrides["http.listen"] = args.http_listen
    try:
        settings = _load_settings(args.config, overrides)
        setup_logging(args.log_level, settings.logging.format)
        from ep_server.server import serve  # grpc import only once the config is good

        if args.workers > 1:
            from ep_server.workers import run_workers

            if settings.metrics.listen:
                raise StartupError(
                    "--workers > 1 cannot share one metrics port: unset [metrics] listen, "
                    "or serve from one process"
                )
            if settings.schedule.enabled and not settings.schedule.postgres:
                # One ledger file, one writer: the SQLite ledger keeps its
                # index in memory and takes a lock, so N workers cannot share
                # it without overbooking. A PostgreSQL ledger they can.
                raise StartupError(
                    "--workers > 1 cannot share the booking ledger: set [schedule] ledger to "
                    "a postgresql:// URI to share one, set [schedule] enabled = false "
                    "(EP_SCHEDULE__ENABLED=false) to take no bookings, or serve from one process"
                )

            worker_argv = ["--log-level", args.log_level]
            worker_argv += ["--config", args.config] if args.config else []
            return run_workers(settings, worker_argv, args.workers)
        asyncio.run(serve(settings))
    except (StartupError, OSError) as exc:
        print(f"ep-server: {exc}", file=sys.stderr)
        return 1
    return 0


def _load_settings(config: str | None, overrides: dict[str, str]) -> Settings:
    """The settings; when they are invalid, the plugins' sections are checked
    too, so that one report names every bad key."""
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        if exc.partial is None:
            raise
        from ep_server.host import detect_host
        from ep_server.plugins import load_registry

        logging.disable(logging.INFO)  # plugins loaded only to check their keys
        try:
            load_registry(exc.partial, detect_host(exc.partial.host))
        except ConfigError as plugins:
            more = str(plugins).partition("\n")[2]
            raise ConfigError(f"{exc}\n{more}") from exc
        finally:
            logging.disable(logging.NOTSET)
        raise


def _migrate(config: str | None) -> int:
    """``ep-server migrate``: the ledger's schema created or upgraded."""
    try:
        settings = load_settings(config)
        from ep_server.schedule.backends import migrate_ledger

        print(migrate_ledger(settings.schedule))
    except (StartupError, OSError) as exc:
        print(f"ep-server: {exc}", file=sys.stderr)
        return 1
    return 0


def _dev_certs(folder: Path, hosts: list[str], client: str) -> int:
    """``ep-server dev-certs``: the files written, one a line."""
    from ep_server.devcerts import make_dev_certs

    try:
        for path in make_dev_certs(folder, hosts, client):
            print(path)
    except OSError as exc:
        print(f"ep-server: {exc}", file=sys.stderr)
        return 1
    return 0
