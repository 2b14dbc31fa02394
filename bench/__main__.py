"""``make bench`` (``python -m bench``): ep-server against a bare grpc.aio server.

Servers, each its own process on a loopback port:

  (a) bare  - bench/bare.py: our Ask signature, a fixed answer of four
              offers (the limit); (a1) the same with one offer
  (b) ep    - ep-server with the default config, asked the IVOA note's example
  (c) ep+20 - ep-server with 20 synthetic plugins (tests/fake_plugins/synthetic.py),
              four of them claiming the asked task type
  (s) sync  - bench/bare.py --sync: the bare server on the thread-pool
              grpc.server, which shows whether grpc.aio was the right choice

The load comes from a separate process (bench/load.py) at each concurrency,
for a bounded time and call count. Measurements are interleaved a, b, c, a,
b, c... so machine drift cancels, repeated, and reported as medians. Server
CPU per call is read from /proc/<pid>/stat around each run. Every figure that
matters is a ratio against (a) from the same run: the machine is shared and
absolute numbers drift. Every server runs with the packaged default config
(``EP_CONFIG`` unset) and bookings off.

Also measured: the resident memory of (c) after a warm-up and after
``--memory-asks`` more asks; and (c) served by one process and by two
(``--workers 2``), each over 4 connections.

Targets, at 16 concurrent streams: (c)/(a) QPS >= 0.85, CPU per call
<= 1.15, p99 <= 1.3; (c)'s RSS after the asks under 80 MB, and its growth
over them under 5 MB. The report replaces bench/results.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field

from bench.harness import (
    EXAMPLE_TASKINFO,
    EXAMPLE_TASKTYPE,
    LISTENING,
    LOOPBACK,
    ROOT,
    BenchError,
    ServerProcess,
    machine,
    median,
    new_parser,
    parse_args,
    publish,
    python_m,
    utc_stamp,
)
from bench.load import LoadResult
from ep_server.pb import execution_planner_pb2 as pb

RESULTS = ROOT / "bench" / "results.md"


def _ask(tasktype: str) -> pb.AskRequest:
    """An Ask for ``tasktype`` with the IVOA note's example taskinfo."""
    request = pb.AskRequest(tasktype=tasktype)
    request.taskinfo.update(EXAMPLE_TASKINFO)
    return request


SEED = _ask(EXAMPLE_TASKTYPE)
SYNTHETIC = _ask("uri://bench-task")


@dataclass
class Server:
    """One server under load: how to start it, what to ask it, and, once
    started, its process and address."""

    name: str
    argv: list[str]
    request: pb.AskRequest
    env: dict[str, str] = field(default_factory=dict)
    #: The line that says it serves; group 1 is the address.
    ready: str = LISTENING
    connections: int = 1
    process: ServerProcess | None = None

    def start(self) -> None:
        # Bookings are benchmarked by bench/booking.py; --workers needs them off.
        env = {"EP_SCHEDULE__ENABLED": "false", **self.env}
        self.process = ServerProcess.start(self.argv, self.ready, env=env)

    @property
    def running(self) -> ServerProcess:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process

    @property
    def address(self) -> str:
        return self.running.ready[1]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass(frozen=True)
class Run:
    """One load run against one server (see bench/load.py)."""

    calls: int
    errors: dict[str, int]
    qps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per call, microseconds


EP = python_m("ep_server", "serve", "--listen", LOOPBACK)
#: The names of (a) and (c), which the targets compare.
BARE, EP20 = "a bare", "c ep+20"
SYNTHETIC_ENV = {
    "EP_PLUGINS__MODULES": ",".join(
        f"synthetic{i:02d}=fake_plugins.synthetic:P{i:02d}" for i in range(20)
    )
}


def servers() -> list[Server]:
    return [
        Server(BARE, python_m("bench.bare", "--offers", "4"), SEED),
        Server("a1 bare", python_m("bench.bare", "--offers", "1"), SEED),
        Server("b ep", EP, SEED),
        Server(EP20, EP, SYNTHETIC, SYNTHETIC_ENV),
        Server("s sync", python_m("bench.bare", "--sync", "--offers", "4"), SEED),
    ]


def load(server: Server, concurrency: int, seconds: float, max_calls: int) -> Run:
    """One bench/load.py run against ``server``, and the server's CPU per call."""
    process = server.running
    cpu0 = process.cpu_seconds()
    argv = python_m(
        "bench.load", "--target", server.address,
        "--request-hex", server.request.SerializeToString().hex(),
        "--concurrency", str(concurrency), "--seconds", str(seconds),
        "--max-calls", str(max_calls), "--connections", str(server.connections),
    )  # fmt: skip
    out = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    result: LoadResult = json.loads(out.stdout)
    calls = result["calls"] + server.connections  # and the checked first calls
    nan = float("nan")
    return Run(
        calls=result["calls"],
        errors=result["errors"],
        qps=result["qps"],
        p50_ms=nan if result["p50_ms"] is None else result["p50_ms"],
        p99_ms=nan if result["p99_ms"] is None else result["p99_ms"],
        cpu_us=1e6 * (process.cpu_seconds() - cpu0) / calls,
    )


Results = dict[tuple[str, int], list[Run]]  # (server name, concurrency) -> runs


@dataclass(frozen=True)
class Cell:
    """The medians of one server's runs at one concurrency."""

    qps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float

    @classmethod
    def of(cls, runs: list[Run]) -> Cell:
        return cls(
            median(r.qps for r in runs),
            median(r.p50_ms for r in runs),
            median(r.p99_ms for r in runs),
            median(r.cpu_us for r in runs),
        )


def measure(all_servers: list[Server], levels: list[int], rounds: int, seconds: float) -> Results:
    results: Results = {}
    for server in all_servers:  # warm up: imports, caches, first connections
        load(server, 16, 1.0, 100_000)
    for r in range(rounds):
        for concurrency in levels:
            for server in all_servers:  # interleaved: a, b, c, a, b, c...
                run = load(server, concurrency, seconds, 1_000_000)
                results.setdefault((server.name, concurrency), []).append(run)
                print(
                    f"  round {r + 1} c={concurrency:<3} {server.name:<8} "
                    f"{run.qps:8.0f} qps  p50 {run.p50_ms:.2f} ms  "
                    f"p99 {run.p99_ms:.2f} ms  {run.cpu_us:.0f} cpu-us/call"
                    + (f"  errors {run.errors}" if run.errors else ""),
                    flush=True,
                )
    return results


def table(all_servers: list[Server], levels: list[int], results: Results) -> list[str]:
    lines = [
        "| concurrency | server | QPS | p50 ms | p99 ms | server CPU µs/call "
        "| QPS ratio | CPU ratio | p99 ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for concurrency in levels:
        base = Cell.of(results[(all_servers[0].name, concurrency)])
        for server in all_servers:
            cell = Cell.of(results[(server.name, concurrency)])
            lines.append(
                f"| {concurrency} | {server.name} | {cell.qps:.0f} | {cell.p50_ms:.2f} "
                f"| {cell.p99_ms:.2f} | {cell.cpu_us:.0f} | {cell.qps / base.qps:.2f} "
                f"| {cell.cpu_us / base.cpu_us:.2f} | {cell.p99_ms / base.p99_ms:.2f} |"
            )
    return lines


def memory(server: Server, asks: int) -> tuple[float, float, int]:
    """RSS after a warm-up, and after ``asks`` more asks."""
    load(server, 16, 1.0, 2_000)
    before = server.running.rss_mb()
    done = 0
    while done < asks:
        done += load(server, 16, 60.0, min(50_000, asks - done)).calls + 1
    return before, server.running.rss_mb(), done


def worker_servers() -> list[Server]:
    """(c) served by 1 and by 2 processes, each loaded over 4 connections so
    that SO_REUSEPORT can spread them."""
    two = [*EP, "--workers", "2"]
    return [
        Server("c x1", EP, SYNTHETIC, SYNTHETIC_ENV, connections=4),
        Server("c x2", two, SYNTHETIC, SYNTHETIC_ENV, LISTENING + " with 2 workers", 4),
    ]


def worker_table(pair: list[Server], levels: list[int], results: Results) -> list[str]:
    lines = [
        "",
        "Workers (`--workers N`), server (c), 4 connections; ratio against 1 worker:",
        "",
        "| concurrency | workers | QPS | p99 ms | QPS ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for concurrency in levels:
        base = Cell.of(results[(pair[0].name, concurrency)])
        for n, server in enumerate(pair, start=1):
            cell = Cell.of(results[(server.name, concurrency)])
            lines.append(
                f"| {concurrency} | {n} | {cell.qps:.0f} | {cell.p99_ms:.2f} "
                f"| {cell.qps / base.qps:.2f} |"
            )
    return lines


def targets(results: Results, memory_line: tuple[float, float] | None) -> list[str]:
    """The targets for the EP with 20 plugins (c) against the bare server (a),
    at 16 concurrent streams, checked against this run."""
    a, c = Cell.of(results[(BARE, 16)]), Cell.of(results[(EP20, 16)])
    checks = [
        ("(c)/(a) QPS at 16 streams >= 0.85", c.qps / a.qps, 0.85, True),
        ("(c)/(a) CPU per call at 16 <= 1.15", c.cpu_us / a.cpu_us, 1.15, False),
        ("(c)/(a) p99 at 16 <= 1.3", c.p99_ms / a.p99_ms, 1.3, False),
    ]
    if memory_line:
        checks.append(("(c) RSS after the asks < 80 MB", memory_line[1], 80, False))
        checks.append(
            ("(c) RSS growth over the asks < 5 MB", memory_line[1] - memory_line[0], 5, False)
        )
    lines = ["", "Targets:", ""]
    for label, value, limit, at_least in checks:
        met = value >= limit if at_least else value <= limit
        lines.append(f"- {label}: {value:.2f} -> {'met' if met else 'NOT MET'}")
    return lines


def run(args: argparse.Namespace) -> list[str]:
    """Every measurement; the report's lines below its header."""
    levels = [int(x) for x in args.levels.split(",")]
    all_servers = servers()
    pair = [] if args.no_workers else worker_servers()
    mem = None
    try:
        for server in all_servers:
            server.start()
            print(f"{server.name}: {server.address} (pid {server.running.pid})", flush=True)
        results = measure(all_servers, levels, args.rounds, args.seconds)
        lines = table(all_servers, levels, results)
        if args.memory_asks:
            (c,) = (s for s in all_servers if s.name == EP20)
            before, after, done = mem = memory(c, args.memory_asks)
            lines += [
                "",
                f"Resident memory of (c): {before:.1f} MB after warm-up, {after:.1f} MB after "
                f"{done:,} more asks ({after - before:+.1f} MB).",
            ]
        for server in all_servers:
            server.stop()
        if pair:
            for server in pair:
                server.start()
            worker_levels = [x for x in levels if x > 1] or levels
            lines += worker_table(
                pair, worker_levels, measure(pair, worker_levels, args.rounds, args.seconds)
            )
        if 16 in levels:
            lines += targets(results, mem[:2] if mem else None)
    finally:
        for server in all_servers + pair:
            server.stop()
    return lines


def main() -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--memory-asks", type=int, default=100_000)
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers runs")
    quick = {"rounds": 1, "seconds": 0.5, "levels": "1,16", "memory_asks": 2_000}
    args = parse_args(parser, quick, RESULTS)
    try:
        lines = run(args)
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    header = [
        f"Run on {utc_stamp()}, {machine()}; "
        f"medians of {args.rounds} interleaved {args.seconds:g}-second runs per cell; "
        "ratios are against (a) bare at the same concurrency.",
        "",
    ]
    text = "\n".join(header + lines)
    publish(text, RESULTS, "Latest `make bench`", write=not args.no_write, append=False)


if __name__ == "__main__":
    main()
