"""``python -m tools.cluster`` (``make cluster``): a replicated EP site on
this machine, until Ctrl-C.

It starts a throwaway PostgreSQL server, runs ``ep-server migrate``, starts
3 ``ep-server serve`` replicas sharing that ledger and HAProxy in front of
them on one port, prints how to ask it, and waits. Ctrl-C (SIGINT) or
SIGTERM stops it all and removes every file it made. HAProxy is installed
with apt-get when missing, which needs root.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType

from tools.cluster.cluster import Cluster, State
from tools.cluster.processes import ClusterError

__all__ = ["StopRequested", "instructions", "main", "stop_on_signals"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cluster",
        description="A replicated EP site on this machine: PostgreSQL, replicas, HAProxy.",
    )
    parser.add_argument("--replicas", type=int, default=3, metavar="N", help="default 3")
    parser.add_argument(
        "--port", type=int, default=0, help="the balancer's port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--logs", type=Path, metavar="DIR",
        help="keep the logs here (default: in the cluster's directory, removed at the end)",
    )  # fmt: skip
    parser.add_argument(
        "--ready-file", type=Path, metavar="FILE",
        help="once everything is up, write where it is here, as JSON",
    )  # fmt: skip
    return parser


def _ep() -> str:
    """The ``ep`` command beside this Python (the project's .venv/bin/ep)."""
    beside = Path(sys.executable).parent / "ep"
    return str(beside) if beside.exists() else "ep"


def instructions(state: State) -> str:
    """How to ask the cluster, and where everything is."""
    ep, lb, token = _ep(), state.balancer, state.token_file
    ask = f"{ep} ask --tasktype uri://docker-container --set image=docker.io/example:1.0"
    replicas = ",".join(r["address"] for r in state.replicas)
    lines = [
        f"ep-cluster: {len(state.replicas)} replicas behind HAProxy "
        f"{state.haproxy['version']} on {lb}",
        "",
        "Ask through the balancer:",
        f"  {ask} --endpoint {lb}",
        "Book (a token the site accepts is in the token file):",
        f"  {ask} --cores 1 --window now/+8h --duration 1h --endpoint {lb} --token-file {token}",
        f"  {ep} accept {lb} OFFER_ID --token-file {token}",
        f"  {ep} bookings {lb} --token-file {token}",
        "Or spread the calls in the client, over the replicas themselves:",
        f"  {ask} --endpoint {replicas}",
        "",
    ]
    for replica in state.replicas:
        lines.append(
            f"{replica['name']}: {replica['address']}, metrics {replica['metrics']}, "
            f"log {replica['log']}"
        )
    lines += [
        f"PostgreSQL: {state.postgres['dsn']}, log {state.postgres['log']}",
        f"HAProxy: config {state.haproxy['config']}, log {state.haproxy['log']}, "
        f"stats socket {state.haproxy['stats_socket']}",
        f"Logs: {state.logs}",
        "",
        f"Ctrl-C stops everything and removes {state.folder}.",
    ]
    return "\n".join(lines)


class StopRequested(BaseException):
    """SIGTERM: stop like Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested


def stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the cluster, even when the tool was
    started with SIGINT ignored, as a shell starts a background job."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stop)


def main(argv: list[str] | None = None) -> int:
    """Run the cluster until a signal; 0 after a clean stop, 1 when it
    could not start or a child exited."""
    args = _parser().parse_args(argv)
    if not 1 <= args.replicas <= 16:
        _parser().error("--replicas must be from 1 to 16")
    stop_on_signals()
    cluster = Cluster(args.replicas, args.port, args.logs)
    code = 0
    try:
        state = cluster.start()
        print(instructions(state), flush=True)
        if args.ready_file is not None:
            partial = args.ready_file.with_name(args.ready_file.name + ".partial")
            partial.write_text(json.dumps(state.as_dict(), indent=2))
            partial.replace(args.ready_file)
        cluster.watch()
    except (KeyboardInterrupt, StopRequested):
        print("\nep-cluster: stopping", flush=True)
    except ClusterError as exc:
        print(f"ep-cluster: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # stopping is bounded: let it finish
            signal.signal(sig, signal.SIG_IGN)
        cluster.stop()
    print("ep-cluster: stopped", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
