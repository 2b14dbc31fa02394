"""The EP's own cost per Ask: ep-server against a bare grpc.aio server, varying requests.

Run: ``.venv/bin/python -m bench.cost`` (``--help`` for the knobs;
``--quick`` checks that it works and writes nothing; ``--baseline DIR``
also runs the EP from an older source tree, made with ``git archive REF |
tar -x -C DIR``).

Servers, each its own process on a loopback port:

  (a)  bare   - bench/bare.py: our Ask signature, a fixed answer of four
                offers; asked (c)'s requests as (a), (b)'s as (a')
  (b)  ep     - ep-server with the default config (ep-plugin-docker answers
                ``uri://docker-container``), bookings off
  (c)  ep+20  - the same with the 20 synthetic plugins
                (tests/fake_plugins/synthetic.py), four claiming
                ``uri://bench-task``
  (b0) (c0)   - with ``--baseline DIR``: (b) and (c) run from DIR's code

Each EP server starts through a few lines that first import ep_server, both
plugin packages and the synthetic plugins and write down the files they
came from, then run ``ep-server serve`` in the same interpreter; the bench
checks that every one of those files is in the tree the server should run
(this checkout, or DIR), so a baseline that silently ran this checkout's
code fails the run. The trees' own ``plugins/ep-plugin-*`` and ``tests/``
come first on ``PYTHONPATH`` (the installed entry points import the
plugins by module name) and ``python -P`` keeps the working directory off
``sys.path``.

The load is bench/rawload.py, a low-CPU HTTP/2 client in its own process:
16 concurrent streams on one connection, taking requests round-robin from
``--requests`` distinct ones per task type (bench/asks.py: image
references, digests, taskinfo keys and values, resources), each load
continuing where its last run stopped, so that no cache can stand in for
the work. Every answer is checked (YES, the expected number of offers,
``grpc-status`` 0); any failed call fails the benchmark.

Per run: calls/s, p50/p99 latency, server CPU per call of the main thread
(``/proc/<pid>/task/<pid>/stat``: the event loop, where the EP's Python
runs; grpc's own threads are separate) and of the whole process
(``/proc/<pid>/stat``), the load generator's own CPU per call, and the
other CPU load on the machine meanwhile (``/proc/stat`` less the server and
the load generator, in cores; the report says when it passed 0.25 cores
in some run, which makes those figures unreliable). Loads
are interleaved (a, a', b, c, b0, c0, a, ...), ``--rounds`` times after a
warm-up of each, and reported as medians. The EP's own cost is (EP - bare)
main-thread CPU per call, (b) - (a') and (c) - (a), and (c)/(a) the rate;
both are taken within each round and their medians reported. Targets (issue
16): own cost at most 50 µs for (b) and 70 µs for (c), (c)/(a) at least
0.7; the moonshot (c)/(a) 0.85. Results are appended to
bench/results-cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import asks
from bench.harness import (
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
from bench.rawload import RawLoadResult

RESULTS: Final = ROOT / "bench" / "results-cost.md"
_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: The modules whose files must come from the tree a server runs.
CHECKED_MODULES: Final = (
    "ep_server",
    "ep_server.planner",
    "ep_plugin_docker",
    "ep_plugin_jupyter",
    "fake_plugins.synthetic",
)
#: Imports :data:`CHECKED_MODULES`, writes their files as JSON to argv[1],
#: then runs ``ep-server`` with the rest of argv in this interpreter.
LAUNCH: Final = f"""
import importlib, json, runpy, sys
files = {{m: importlib.import_module(m).__file__ for m in {CHECKED_MODULES!r}}}
with open(sys.argv[1], "w") as out:
    json.dump(files, out)
sys.argv = ["ep-server", *sys.argv[2:]]
runpy.run_module("ep_server", run_name="__main__", alter_sys=True)
"""
SYNTHETIC_ENV: Final = {
    "EP_PLUGINS__MODULES": ",".join(
        f"synthetic{i:02d}=fake_plugins.synthetic:P{i:02d}" for i in range(20)
    )
}
OWN_COST_TARGETS: Final = {"b": 50.0, "c": 70.0}
QPS_TARGET, MOONSHOT = 0.7, 0.85
#: Other CPU load during a run, in cores, above which it is reported unreliable.
BUSY: Final = 0.25


def tree_path(tree: Path) -> str:
    """``PYTHONPATH`` that runs ``tree``'s code: its tests/ (for
    fake_plugins), the tree, and its two plugin distributions."""
    parts = [tree / "tests", tree, *sorted((tree / "plugins").glob("ep-plugin-*"))]
    return os.pathsep.join(str(p) for p in parts)


def stray_files(imported: dict[str, str], tree: Path) -> dict[str, str]:
    """The modules of :data:`CHECKED_MODULES` that ``imported`` (module ->
    file) does not place in ``tree``, or does not name at all."""
    root = tree.resolve()
    stray = {m: f for m, f in imported.items() if not Path(f).resolve().is_relative_to(root)}
    return stray | {m: "(not imported)" for m in CHECKED_MODULES if m not in imported}


def start_ep(tree: Path, env: dict[str, str], workdir: Path, name: str) -> ServerProcess:
    """ep-server (default config, bookings off, ``env`` added) run from
    ``tree``'s code, after checking that it imports that code."""
    files = workdir / f"{name}-modules.json"
    argv = [sys.executable, "-P", "-c", LAUNCH, str(files), "serve", "--listen", LOOPBACK]
    server_env = {"EP_SCHEDULE__ENABLED": "false", "PYTHONPATH": tree_path(tree), **env}
    server = ServerProcess.start(argv, LISTENING, env=server_env)
    try:
        stray = stray_files(json.loads(files.read_text()), tree)
        if stray:
            raise BenchError(
                f"{name} should run the code in {tree.resolve()}, but imported {stray}"
            )
    except BaseException:
        server.stop()
        raise
    return server


def machine_busy() -> float:
    """CPU seconds all CPUs of the machine have been busy (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / _TICKS


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def thread_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the main thread of ``pid``."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True)
class Run:
    """One load run against one server."""

    calls: int
    qps: float
    p50_ms: float
    p99_ms: float
    main_us: float  # server main-thread CPU per call
    process_us: float  # whole server process CPU per call
    client_us: float  # the load generator's CPU per call
    #: The machine's busy CPU meanwhile less the server's and the load
    #: generator's, in cores: other processes, interrupts, steal (a busy
    #: machine makes the run unreliable).
    other_cores: float


@dataclass
class Load:
    """One measured load: a server, the requests it is asked, and where the
    next run starts in them."""

    name: str
    label: str
    server: ServerProcess
    address: str
    kind: str  # bench/asks.py kind: docker or synthetic
    offers: int
    requests: Path
    at: int = 0
    runs: list[Run] = field(default_factory=list)

    def run(self, concurrency: int, seconds: float, max_calls: int) -> Run:
        pid = self.server.pid
        busy0, child0 = machine_busy(), children_cpu()
        wall0 = time.perf_counter()
        main0, all0 = thread_cpu(pid), self.server.cpu_seconds()
        argv = python_m(
            "bench.rawload", "--target", self.address, "--requests", str(self.requests),
            "--start", str(self.at), "--concurrency", str(concurrency),
            "--seconds", str(seconds), "--max-calls", str(max_calls),
            "--offers", str(self.offers),
        )  # fmt: skip
        out = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        main1, all1 = thread_cpu(pid), self.server.cpu_seconds()
        wall = time.perf_counter() - wall0
        ours = (all1 - all0) + (children_cpu() - child0)
        other = (machine_busy() - busy0 - ours) / wall
        if out.returncode != 0:
            raise BenchError(f"{self.name}: the load generator failed:\n{out.stderr.strip()}")
        r: RawLoadResult = json.loads(out.stdout)
        if r["errors"] or r["p50_ms"] is None or r["p99_ms"] is None:
            raise BenchError(f"{self.name}: {r['calls']} calls answered, failures {r['errors']}")
        self.at = r["next"]
        calls = r["calls"]
        return Run(
            calls=calls,
            qps=r["qps"],
            p50_ms=r["p50_ms"],
            p99_ms=r["p99_ms"],
            main_us=1e6 * (main1 - main0) / calls,
            process_us=1e6 * (all1 - all0) / calls,
            client_us=r["cpu_us"],
            other_cores=max(0.0, other),
        )


def start(baseline: Path | None, workdir: Path, n: int) -> tuple[list[ServerProcess], list[Load]]:
    """Write the request sets, start every server; the loads in their order."""
    files = {}
    for kind in ("docker", "synthetic"):
        files[kind] = workdir / f"{kind}.grpc"
        asks.write_framed(files[kind], asks.requests(kind, n))
    processes: list[ServerProcess] = []
    loads: list[Load] = []
    try:
        bare = ServerProcess.start(python_m("bench.bare", "--offers", "4"), LISTENING)
        processes.append(bare)
        print(f"a bare: {bare.ready[1]} (pid {bare.pid})", flush=True)
        address = bare.ready[1]
        loads += [
            Load(
                "a", "(a) bare, (c)'s requests", bare, address, "synthetic", 4, files["synthetic"]
            ),
            Load("a'", "(a') bare, (b)'s requests", bare, address, "docker", 4, files["docker"]),
        ]
        trees = [("", ROOT)] + ([("0", baseline)] if baseline else [])
        for suffix, tree in trees:
            for letter, env, kind in (("b", {}, "docker"), ("c", SYNTHETIC_ENV, "synthetic")):
                name = letter + suffix
                server = start_ep(tree, env, workdir, name)
                processes.append(server)
                where = "" if tree == ROOT else f" from {tree.name}"
                print(f"{name} ep{where}: {server.ready[1]} (pid {server.pid})", flush=True)
                what = "ep, default config" if letter == "b" else "ep+20 synthetic plugins"
                label = f"({name}) {what}{where}"
                offers = asks.OFFERS[kind]
                loads.append(Load(name, label, server, server.ready[1], kind, offers, files[kind]))
    except BaseException:
        for process in processes:
            process.stop()
        raise
    return processes, loads


def measure(
    loads: list[Load], rounds: int, concurrency: int, seconds: float, max_calls: int
) -> None:
    for load in loads:  # warm up: imports, caches, the first connections
        load.run(concurrency, min(1.0, seconds), max_calls)
    for r in range(rounds):
        for load in loads:  # interleaved
            run = load.run(concurrency, seconds, max_calls)
            load.runs.append(run)
            print(
                f"  round {r + 1} {load.name:<3} {run.qps:7.0f} calls/s  p50 {run.p50_ms:.2f} ms  "
                f"p99 {run.p99_ms:.2f} ms  server main thread {run.main_us:.0f} µs/call, "
                f"process {run.process_us:.0f}  load generator {run.client_us:.0f}  "
                f"others {run.other_cores:.2f} cores",
                flush=True,
            )


# --- Reporting ---------------------------------------------------------------------


def per_round(
    loads: dict[str, Load], ep: str, bare: str, value: Callable[[Run, Run], float]
) -> float:
    """The median over rounds of ``value(ep's run, bare's run)``, each pair
    from the same round."""
    return median(value(e, b) for e, b in zip(loads[ep].runs, loads[bare].runs, strict=True))


def table(loads: Sequence[Load]) -> list[str]:
    lines = [
        "| load | calls/s | p50 ms | p99 ms | server main thread CPU µs/call "
        "| server process CPU µs/call | load generator CPU µs/call | other CPU load, cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load in loads:
        runs = load.runs
        lines.append(
            f"| {load.label} | {median(r.qps for r in runs):.0f} "
            f"| {median(r.p50_ms for r in runs):.2f} | {median(r.p99_ms for r in runs):.2f} "
            f"| {median(r.main_us for r in runs):.0f} | {median(r.process_us for r in runs):.0f} "
            f"| {median(r.client_us for r in runs):.0f} "
            f"| {median(r.other_cores for r in runs):.2f} |"
        )
    busiest = max(r.other_cores for load in loads for r in load.runs)
    lines += [
        "",
        "Other CPU load (the machine's busy time less the server's and the load generator's: "
        f"other processes, interrupts, steal) was up to {busiest:.2f} cores during a run"
        + (
            f" (more than {BUSY} in some: those runs' figures, and ratios with them, are "
            "unreliable)."
            if busiest > BUSY
            else "."
        ),
    ]
    return lines


def own_costs(by_name: dict[str, Load], suffixes: Sequence[str]) -> list[str]:
    """The EP's own cost and the rate ratio for each tree (``""`` this
    one, ``"0"`` the baseline), within rounds."""
    names = ["this tree" if s == "" else "baseline" for s in suffixes]
    change = len(suffixes) > 1
    header = "| | " + " | ".join(names) + (" | change |" if change else " |")
    lines = ["", header, "| --- |" + " ---: |" * (len(suffixes) + change)]
    rows = [
        ("own cost (b) - (a'), main thread µs/call", "b", "a'", lambda e, b: e.main_us - b.main_us),
        ("own cost (c) - (a), main thread µs/call", "c", "a", lambda e, b: e.main_us - b.main_us),
        ("(b) - (a'), whole process µs/call", "b", "a'", lambda e, b: e.process_us - b.process_us),
        ("(c) - (a), whole process µs/call", "c", "a", lambda e, b: e.process_us - b.process_us),
        ("(b)/(a') main thread CPU per call", "b", "a'", lambda e, b: e.main_us / b.main_us),
        ("(c)/(a) main thread CPU per call", "c", "a", lambda e, b: e.main_us / b.main_us),
        ("(b)/(a') calls/s", "b", "a'", lambda e, b: e.qps / b.qps),
        ("(c)/(a) calls/s", "c", "a", lambda e, b: e.qps / b.qps),
    ]  # fmt: skip
    for label, ep, bare, value in rows:
        cells = [per_round(by_name, ep + s, bare, value) for s in suffixes]
        digits = 2 if "/" in label.split(" ")[0] else 0
        delta = f" | {cells[0] - cells[1]:+.{digits}f}" if change else ""
        lines.append(f"| {label} | " + " | ".join(f"{c:.{digits}f}" for c in cells) + delta + " |")
    return lines


def targets(by_name: dict[str, Load]) -> list[str]:
    lines = ["", "Targets (this tree; medians of per-round values):", ""]
    for ep, bare in (("b", "a'"), ("c", "a")):
        cost = per_round(by_name, ep, bare, lambda e, b: e.main_us - b.main_us)
        limit = OWN_COST_TARGETS[ep]
        met = "met" if cost <= limit else "NOT met"
        lines.append(
            f"- EP's own cost ({ep}) - ({bare}) <= {limit:.0f} µs per Ask: {cost:.0f} -> {met}"
        )
    ratio = per_round(by_name, "c", "a", lambda e, b: e.qps / b.qps)
    for limit, what in ((QPS_TARGET, "target"), (MOONSHOT, "moonshot")):
        met = "met" if ratio >= limit else "NOT met"
        lines.append(f"- (c)/(a) calls/s >= {limit} ({what}): {ratio:.2f} -> {met}")
    return lines


def run(args: argparse.Namespace) -> list[str]:
    """Every measurement; the report's lines below its header."""
    baseline: Path | None = args.baseline
    if baseline is not None and not (baseline / "ep_server" / "__init__.py").is_file():
        raise BenchError(f"--baseline {baseline}: not a source tree of ep-server")
    with tempfile.TemporaryDirectory(prefix="ep-bench-cost-") as workdir:
        processes, loads = start(baseline, Path(workdir), args.requests)
        try:
            measure(loads, args.rounds, args.concurrency, args.seconds, args.max_calls)
        finally:
            for process in processes:
                process.stop()
    by_name = {load.name: load for load in loads}
    suffixes = ["", "0"] if baseline else [""]
    return table(loads) + own_costs(by_name, suffixes) + targets(by_name)


def main() -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per run")
    parser.add_argument("--max-calls", type=int, default=60_000, help="per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--requests", type=int, default=50_000, help="distinct requests per task type"
    )
    parser.add_argument(
        "--baseline", type=Path, help="also run (b0), (c0) from this source tree's code"
    )
    quick = {"rounds": 1, "seconds": 1.0, "requests": 2_000}
    args = parse_args(parser, quick, RESULTS)
    try:
        lines = run(args)
    except BenchError as exc:
        sys.exit(f"bench.cost: {exc}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    base = f", (b0) and (c0) from {args.baseline.resolve()}" if args.baseline else ""
    header = [
        f"## {utc_stamp()}",
        "",
        f"{machine()}, commit {commit or 'unknown'}{base}; {args.concurrency} concurrent "
        f"streams on one connection (bench/rawload.py), {args.requests:,} distinct requests "
        f"per task type; medians of {args.rounds} interleaved {args.seconds:g}-second runs.",
        "",
    ]
    text = "\n".join(header + lines)
    publish(text, RESULTS, "`python -m bench.cost` results", write=not args.no_write)


if __name__ == "__main__":
    main()
