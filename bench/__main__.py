"""``make bench`` (``python -m bench``): ep-server against a bare grpc.aio server.

Servers, each its own process on a loopback port:

  (a) bare  - bench/bare.py: our Ask signature, a fixed answer (the limit)
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
absolute numbers drift.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from bench.report import describe
from ep_server.pb import execution_planner_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
TICKS = os.sysconf("SC_CLK_TCK")
SEED = {"tasktype": "uri://docker-container", "taskinfo": {"image": "docker.io/example:1.0"}}
SYNTHETIC = {"tasktype": "uri://bench-task", "taskinfo": {"image": "docker.io/example:1.0"}}


@dataclass
class Server:
    name: str
    argv: list[str]
    request: dict
    env: dict[str, str] = field(default_factory=dict)
    ready: str = "listening on"
    connections: int = 1
    proc: subprocess.Popen | None = None
    address: str = ""

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "tests"),
            # Bookings are benchmarked by bench/booking.py; --workers needs them off.
            "EP_SCHEDULE__ENABLED": "false",
            **self.env,
        }
        self.proc = subprocess.Popen(
            self.argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if match and re.search(self.ready, line):
                self.address = match[1]
                return
            if not line:
                break
        raise SystemExit(f"{self.name} did not start")

    def pids(self) -> list[int]:
        """The server process and its workers (with --workers)."""
        pid = self.proc.pid
        return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


EP = [sys.executable, "-m", "ep_server", "serve", "--listen", "127.0.0.1:0"]
SYNTHETIC_ENV = {
    "EP_PLUGINS__MODULES": ",".join(
        f"synthetic{i:02d}=fake_plugins.synthetic:P{i:02d}" for i in range(20)
    )
}


def servers() -> list[Server]:
    ep, synthetic = EP, SYNTHETIC_ENV["EP_PLUGINS__MODULES"]
    return [
        Server("a bare", [sys.executable, "-m", "bench.bare", "--offers", "4"], SEED),
        Server("a1 bare", [sys.executable, "-m", "bench.bare", "--offers", "1"], SEED),
        Server("b ep", ep, SEED),
        Server("c ep+20", ep, SYNTHETIC, {"EP_PLUGINS__MODULES": synthetic}),
        Server("s sync", [sys.executable, "-m", "bench.bare", "--sync", "--offers", "4"], SEED),
    ]


def load(server: Server, concurrency: int, seconds: float, max_calls: int) -> dict:
    request = json_format.ParseDict(server.request, pb.AskRequest()).SerializeToString()
    cpu0 = server.cpu_seconds()
    out = subprocess.run(
        [
            sys.executable, "-m", "bench.load", "--target", server.address,
            "--request-hex", request.hex(), "--concurrency", str(concurrency),
            "--seconds", str(seconds), "--max-calls", str(max_calls),
            "--connections", str(server.connections),
        ],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    calls = result["calls"] + server.connections  # and the checked first calls
    result["cpu_us"] = 1e6 * (server.cpu_seconds() - cpu0) / calls
    return result


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure(all_servers: list[Server], levels: list[int], rounds: int, seconds: float) -> dict:
    results: dict[tuple[str, int], list[dict]] = {}
    for server in all_servers:  # warm up: imports, caches, first connections
        load(server, 16, 1.0, 100_000)
    for r in range(rounds):
        for concurrency in levels:
            for server in all_servers:  # interleaved: a, b, c, a, b, c...
                result = load(server, concurrency, seconds, 1_000_000)
                results.setdefault((server.name, concurrency), []).append(result)
                print(
                    f"  round {r + 1} c={concurrency:<3} {server.name:<8} "
                    f"{result['qps']:8.0f} qps  p50 {result['p50_ms']:.2f} ms  "
                    f"p99 {result['p99_ms']:.2f} ms  {result['cpu_us']:.0f} cpu-us/call"
                    + (f"  errors {result['errors']}" if result["errors"] else ""),
                    flush=True,
                )
    return results


def table(all_servers: list[Server], levels: list[int], results: dict) -> list[str]:
    lines = [
        "| concurrency | server | QPS | p50 ms | p99 ms | server CPU µs/call "
        "| QPS ratio | CPU ratio | p99 ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for concurrency in levels:
        base = results[(all_servers[0].name, concurrency)]
        for server in all_servers:
            runs = results[(server.name, concurrency)]
            qps, cpu = median(runs, "qps"), median(runs, "cpu_us")
            p50, p99 = median(runs, "p50_ms"), median(runs, "p99_ms")
            lines.append(
                f"| {concurrency} | {server.name} | {qps:.0f} | {p50:.2f} | {p99:.2f} | {cpu:.0f} "
                f"| {qps / median(base, 'qps'):.2f} | {cpu / median(base, 'cpu_us'):.2f} "
                f"| {p99 / median(base, 'p99_ms'):.2f} |"
            )
    return lines


def memory(server: Server, asks: int) -> tuple[float, float, int]:
    """RSS after a warm-up, and after ``asks`` more asks."""
    load(server, 16, 1.0, 2_000)
    before = server.rss_mb()
    done = 0
    while done < asks:
        done += load(server, 16, 60.0, min(50_000, asks - done))["calls"] + 1
    return before, server.rss_mb(), done


def worker_servers() -> list[Server]:
    """(c) served by 1 and by 2 processes, each loaded over 4 connections so
    that SO_REUSEPORT can spread them."""
    return [
        Server("c x1", EP, SYNTHETIC, SYNTHETIC_ENV, connections=4),
        Server("c x2", [*EP, "--workers", "2"], SYNTHETIC, SYNTHETIC_ENV, r"with 2 workers", 4),
    ]


def worker_table(pair: list[Server], levels: list[int], results: dict) -> list[str]:
    lines = [
        "",
        "Workers (`--workers N`), server (c), 4 connections; ratio against 1 worker:",
        "",
        "| concurrency | workers | QPS | p99 ms | QPS ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for concurrency in levels:
        base = median(results[(pair[0].name, concurrency)], "qps")
        for n, server in enumerate(pair, start=1):
            runs = results[(server.name, concurrency)]
            qps = median(runs, "qps")
            lines.append(
                f"| {concurrency} | {n} | {qps:.0f} | {median(runs, 'p99_ms'):.2f} "
                f"| {qps / base:.2f} |"
            )
    return lines


def targets(results: dict, memory_line: tuple[float, float] | None) -> list[str]:
    """Issue 7's targets, checked against this run."""
    a, c = results[("a bare", 16)], results[("c ep+20", 16)]
    checks = [
        ("(c)/(a) QPS at 16 streams >= 0.85", median(c, "qps") / median(a, "qps"), 0.85, True),
        (
            "(c)/(a) CPU per call at 16 <= 1.15",
            median(c, "cpu_us") / median(a, "cpu_us"),
            1.15,
            False,
        ),
        ("(c)/(a) p99 at 16 <= 1.3", median(c, "p99_ms") / median(a, "p99_ms"), 1.3, False),
    ]
    if memory_line:
        checks.append(("(c) RSS after the asks < 80 MB", memory_line[1], 80, False))
        checks.append(
            ("(c) RSS growth over the asks < 5 MB", memory_line[1] - memory_line[0], 5, False)
        )
    lines = ["", "Targets (issue 7):", ""]
    for label, value, limit, at_least in checks:
        met = value >= limit if at_least else value <= limit
        lines.append(f"- {label}: {value:.2f} -> {'met' if met else 'NOT MET'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--memory-asks", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true", help="do not update bench/results.md")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers runs")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    all_servers = servers()
    pair = [] if args.no_workers else worker_servers()
    mem = None
    try:
        for server in all_servers:
            server.start()
            print(f"{server.name}: {server.address} (pid {server.proc.pid})", flush=True)
        results = measure(all_servers, levels, args.rounds, args.seconds)
        lines = table(all_servers, levels, results)
        if args.memory_asks:
            before, after, done = mem = memory(all_servers[2], args.memory_asks)
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
    header = [
        f"Run on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {describe()}; "
        f"medians of {args.rounds} interleaved {args.seconds:g}-second runs per cell; "
        "ratios are against (a) bare at the same concurrency.",
        "",
    ]
    report = "\n".join(header + lines)
    print("\n" + report)
    if not args.no_write:
        RESULTS.write_text("# Latest `make bench`\n\n" + report + "\n")
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
