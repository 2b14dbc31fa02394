"""HTTP ``POST /v1/ask`` against gRPC ``Ask`` on one ep-server, and against bare aiohttp.

Run: ``.venv/bin/python -m bench.http`` (``--help`` for the knobs; ``--quick``
checks that it works in a few seconds and writes nothing).

Servers, each its own process on a loopback port:

  (h) ep         - ep-server with the packaged default config and bookings
                   off (as ``python -m bench`` runs it), serving gRPC and
                   its HTTP door from one process and one event loop
  (x) bare http  - bench/bare_http.py: aiohttp with one ``POST /v1/ask``
                   route that reads and decodes the JSON body and answers
                   the EP's own answer, fixed (the same bytes)

Loads, each run for a bounded time (``--seconds``) and count
(``--max-calls``), all at ``--concurrency`` (16) at once:

  h http     wrk, one thread, 16 HTTP/1.1 keep-alive connections, each with
             one request outstanding, POSTing the IVOA note's example to (h)
  h grpc     bench/load.py, the load generator of ``python -m bench``: 16
             concurrent ``Ask`` streams on one channel (one HTTP/2
             connection), the same question, to (h). The target's gRPC rate.
  h grpc-c   h2load (Debian's nghttp2-client): the same 16 streams on one
             connection, from a load generator in C like wrk's
  x http     wrk as for ``h http``, to (x)

"16 concurrent" is 16 requests in flight: on 16 connections for HTTP/1.1
(one request at a time on each), as 16 streams on one connection for gRPC,
as ``python -m bench`` loads gRPC. wrk (Debian's ``wrk``) rather than
``h2load --h1`` for HTTP: its Lua hooks (bench/http_post.lua) count every
answer that is not 200 and print the run as JSON with latency percentiles
(h2load gives only the mean and deviation of request times). wrk and h2load
are written in C and leave the CPU to the server; bench/load.py is Python
and takes CPU of its own on this 2-core machine, which lowers the server's
rate. So each run also reports the load generator's CPU per request
(``getrusage`` of the finished child) and the server's CPU per request
(``/proc/<pid>/stat`` around each run), which does not depend on who sends
the load, and the gRPC rate is measured from h2load too. h2load knows no
gRPC status: its runs are checked by the bytes of the answers instead.
wrk's count bound is the Lua script's (a run that reaches it is an error,
as its rate would be unknown); h2load's timed runs take no count, so theirs
is the time and the rate.

Before measuring, the same question is asked once on each door and the
answers compared: the HTTP answer must be 200 and the proto3 JSON of the
gRPC answer, byte for byte. Any run with a non-200 answer, a socket error
or a failed RPC ends the benchmark with an error rather than a rate.

The loads are interleaved (h http, h grpc, h grpc-c, x http, h http, ...)
so that machine drift cancels, repeated ``--rounds`` times, and reported as
medians. ``--baseline DIR`` (repeatable) adds (h0), (h1)...: the same
ep-server run from another source tree (``git archive REF | tar -x -C
DIR``, named in the report by DIR's last part, so name it after REF),
loaded over HTTP in the same rounds, to measure a change before and after
in one run.

Target: (h) HTTP requests/s at least 0.8x (h) gRPC's. Results are appended
to bench/results-http.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from google.protobuf import json_format

from bench.harness import (
    ASK_METHOD,
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

RESULTS: Final = ROOT / "bench" / "results-http.md"
LUA: Final = ROOT / "bench" / "http_post.lua"
#: ep-server's start-up line: group 1 the gRPC address, group 2 the HTTP door's.
EP_READY: Final = LISTENING + r";.*? http: http://(127\.0\.0\.1:\d+)/"
ASK_PATH: Final = "/v1/ask"
#: The IVOA note's example as the body of ``POST /v1/ask``.
ASK_JSON: Final = json.dumps({"tasktype": EXAMPLE_TASKTYPE, "taskinfo": EXAMPLE_TASKINFO})
TARGET: Final = 0.8
#: The names of the loads, which the ratios compare.
H_HTTP, H_GRPC, H_GRPC_C, X_HTTP = "h http", "h grpc", "h grpc-c", "x http"


@dataclass(frozen=True)
class Run:
    """One load run: requests answered, their rate and latency, and CPU per
    request of the server and of the load generator."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float
    client_cpu_us: float


@dataclass(frozen=True)
class Load:
    """One of the measured loads: a server and how to load it."""

    name: str
    #: What it measures, for the report.
    label: str
    server: ServerProcess
    #: (concurrency, seconds, max requests) -> the generator's command line.
    argv: Callable[[int, float, int], list[str]]
    #: (the generator's output, max requests) -> requests, rate, p50 ms,
    #: p99 ms; raises BenchError on any failed request.
    parse: Callable[[str, int], tuple[int, float, float, float]]
    #: Requests the server answers in a run beyond those counted (load.py's
    #: checked first call on each channel).
    uncounted: int = 0

    def run(self, concurrency: int, seconds: float, max_calls: int) -> Run:
        cpu0, child0 = self.server.cpu_seconds(), _children_cpu()
        argv = self.argv(concurrency, seconds, max_calls)
        out = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if out.returncode != 0:
            raise BenchError(f"{self.name}: {argv[0]} failed:\n{out.stderr.strip()}")
        requests, rps, p50, p99 = self.parse(out.stdout, max_calls)
        if requests == 0:
            raise BenchError(f"{self.name}: no request was answered")
        served = requests + self.uncounted
        return Run(
            requests=requests,
            rps=rps,
            p50_ms=p50,
            p99_ms=p99,
            server_cpu_us=1e6 * (self.server.cpu_seconds() - cpu0) / served,
            client_cpu_us=1e6 * (_children_cpu() - child0) / served,
        )


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- wrk: HTTP -----------------------------------------------------------------------


def wrk_load(name: str, label: str, server: ServerProcess, address: str) -> Load:
    """wrk POSTing the example ask to ``address`` with bench/http_post.lua."""
    url = f"http://{address}{ASK_PATH}"

    def argv(concurrency: int, seconds: float, max_calls: int) -> list[str]:
        return [
            "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(LUA), url, "--", ASK_JSON, str(max_calls),
        ]  # fmt: skip

    def parse(out: str, max_calls: int) -> tuple[int, float, float, float]:
        return _wrk_result(name, out, max_calls)

    return Load(name, f"{label}, HTTP POST {ASK_PATH}, wrk", server, argv, parse)


_WRK_JSON = re.compile(r"^WRK_JSON (\{.*\})$", re.M)


def _wrk_result(name: str, out: str, max_calls: int) -> tuple[int, float, float, float]:
    """Requests, requests/s, p50 and p99 ms of a wrk run (its ``WRK_JSON``
    line). wrk's duration is always the whole ``-d``, so a thread that
    stopped at the Lua script's count leaves the rate unknown: an error."""
    found = _WRK_JSON.search(out)
    if found is None:
        raise BenchError(f"{name}: wrk printed no result:\n{out.strip()}")
    r = json.loads(found[1])
    failed = {k: r[k] for k in ("not_200", "connect", "read", "write", "status", "timeout")}
    if any(failed.values()):
        raise BenchError(f"{name}: {r['requests']} requests, failures {failed}")
    if r["requests"] >= max_calls:
        raise BenchError(f"{name}: stopped at {max_calls} requests; rate unknown")
    rps = r["requests"] / (r["duration_us"] / 1e6)
    return r["requests"], rps, r["p50_us"] / 1e3, r["p99_us"] / 1e3


# --- bench/load.py: gRPC -----------------------------------------------------------


def grpc_load(name: str, label: str, server: ServerProcess, address: str, request: bytes) -> Load:
    """bench/load.py asking ``request`` on one channel to ``address``."""

    def argv(concurrency: int, seconds: float, max_calls: int) -> list[str]:
        return python_m(
            "bench.load", "--target", address, "--request-hex", request.hex(),
            "--concurrency", str(concurrency), "--seconds", str(seconds),
            "--max-calls", str(max_calls), "--connections", "1",
        )  # fmt: skip

    def parse(out: str, max_calls: int) -> tuple[int, float, float, float]:
        r: LoadResult = json.loads(out)
        if r["errors"]:
            raise BenchError(f"{name}: {r['calls']} calls, failures {r['errors']}")
        if r["p50_ms"] is None or r["p99_ms"] is None:
            raise BenchError(f"{name}: no call succeeded")
        return r["calls"], r["qps"], r["p50_ms"], r["p99_ms"]

    return Load(name, f"{label}, gRPC Ask, bench/load.py", server, argv, parse, uncounted=1)


# --- h2load: gRPC from a load generator in C ---------------------------------------


def h2load_grpc_load(
    name: str,
    label: str,
    server: ServerProcess,
    address: str,
    request: bytes,
    answer: bytes,
    workdir: Path,
) -> Load:
    """h2load sending ``request`` as gRPC messages on one HTTP/2 connection,
    its concurrency as that many streams at once (like bench/load.py).

    h2load knows nothing of gRPC: a failed RPC is an HTTP 200 without a
    message. So every answer is checked by size: the DATA bytes received
    must be the count of answers times the framed ``answer`` (the EP's
    answer to the example is the same bytes every time).
    """
    framed = workdir / "ask.grpc"
    framed.write_bytes(_grpc_frame(request))
    answer_size = len(_grpc_frame(answer))

    def argv(concurrency: int, seconds: float, max_calls: int) -> list[str]:
        # Timing-based (-D): h2load then takes no count; its requests are
        # bounded by the time and the rate (and the timeout around it).
        return [
            "h2load", "-t1", "-c1", f"-m{concurrency}", f"-D{seconds:g}",
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-d", str(framed), f"http://{address}{ASK_METHOD}",
        ]  # fmt: skip

    def parse(out: str, max_calls: int) -> tuple[int, float, float, float]:
        return _h2load_result(name, out, answer_size)

    return Load(name, f"{label}, gRPC Ask, h2load", server, argv, parse)


def _grpc_frame(message: bytes) -> bytes:
    """``message`` as a gRPC length-prefixed message (uncompressed)."""
    return b"\0" + len(message).to_bytes(4, "big") + message


_H2LOAD = {
    "rps": re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s", re.M),
    "requests": re.compile(
        r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        re.M,
    ),
    "status": re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M),
    "data": re.compile(r"^traffic: .*\((\d+)\) data$", re.M),
}


def _h2load_result(name: str, out: str, answer_size: int) -> tuple[int, float, float, float]:
    """Requests and requests/s of an h2load run (no percentiles: h2load
    gives none), after checking that every request got a whole answer."""

    def find(key: str) -> list[int | float]:
        match = _H2LOAD[key].search(out)
        if match is None:
            raise BenchError(f"{name}: cannot read h2load's {key}:\n{out.strip()}")
        return [float(g) if "." in g else int(g) for g in match.groups()]

    [rps] = find("rps")
    total, done, ok, *failed = find("requests")
    status_2xx = find("status")[0]
    [data] = find("data")
    if any(failed) or not total == done == ok == status_2xx or data != ok * answer_size:
        raise BenchError(
            f"{name}: {total} requests, {done} done, {ok} succeeded, {status_2xx} 2xx, "
            f"failed/errored/timeout {failed}, {data} DATA bytes where {ok} whole answers "
            f"are {ok * answer_size}: some RPCs failed"
        )
    nan = float("nan")
    return int(ok), float(rps), nan, nan


# --- The servers and the answer they must give -------------------------------------


def seed() -> pb.AskRequest:
    """The IVOA note's example, as the gRPC request."""
    request = pb.AskRequest(tasktype=EXAMPLE_TASKTYPE)
    request.taskinfo.update(EXAMPLE_TASKINFO)
    return request


def start_ep(source: Path | None = None) -> tuple[ServerProcess, str, str]:
    """ep-server with the default config and bookings off, both doors on
    free ports (the harness sets ``EP_HTTP__LISTEN=127.0.0.1:0``; the
    start-up line names the ports bound), run from ``source`` (another
    checkout) or this one; the process, its gRPC and HTTP addresses."""
    env = {"EP_SCHEDULE__ENABLED": "false"}
    argv = python_m("ep_server", "serve", "--listen", LOOPBACK)
    if source is not None:
        # -P: not the working directory (this checkout) first on sys.path.
        argv.insert(1, "-P")
        env["PYTHONPATH"] = os.pathsep.join([str(source / "tests"), str(source)])
    server = ServerProcess.start(argv, EP_READY, env=env)
    return server, server.ready[1], server.ready[2]


def http_ask(address: str) -> bytes:
    """The body of one ``POST /v1/ask`` of the example.

    :raises BenchError: for any answer but a 200.
    """
    request = urllib.request.Request(
        f"http://{address}{ASK_PATH}",
        data=ASK_JSON.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            status: int = response.status
    except OSError as exc:
        raise BenchError(f"POST {ASK_PATH} to {address}: {exc}") from exc
    if status != 200:
        raise BenchError(f"POST {ASK_PATH} to {address}: HTTP {status}: {body[:300]!r}")
    return body


def grpc_ask(address: str, request: pb.AskRequest) -> pb.AskResponse:
    """The answer to one gRPC ``Ask`` of ``request``."""
    with grpc.insecure_channel(address) as channel:
        ask: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ASK_METHOD)
        raw = ask(request.SerializeToString(), timeout=10)
    return pb.AskResponse.FromString(raw)


def proto3_json(message: pb.AskResponse) -> bytes:
    """``message`` as the HTTP door must write it: protobuf's own JSON
    mapping with the proto field names, compact, UTF-8."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def check_doors(name: str, grpc_address: str, http_address: str) -> tuple[bytes, bytes]:
    """Ask the example on both doors of one server; the gRPC answer
    (serialized) and the HTTP answer, which must be a YES and the gRPC
    answer's JSON, byte for byte.

    :raises BenchError: when it is not.
    """
    answer = grpc_ask(grpc_address, seed())
    if answer.responseword != pb.YES:
        raise BenchError(f"{name}: gRPC Ask answered {answer}")
    body = http_ask(http_address)
    if body != proto3_json(answer):
        raise BenchError(
            f"{name}: POST {ASK_PATH} answered {body!r}, not the gRPC answer "
            f"{proto3_json(answer)!r}"
        )
    return answer.SerializeToString(), body


@dataclass
class Servers:
    """The started servers and the loads on them, in the order they run."""

    processes: list[ServerProcess]
    loads: list[Load]
    #: The answer every HTTP load gets.
    body: bytes

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def start(baselines: Sequence[Path], workdir: Path) -> Servers:
    """Start (h), (x) and one (h0), (h1)... from each of ``baselines``;
    check their answers."""
    servers = Servers([], [], b"")
    try:
        ep, grpc_address, http_address = start_ep()
        servers.processes.append(ep)
        answer, servers.body = check_doors("h", grpc_address, http_address)
        print(f"h ep: gRPC {grpc_address}, HTTP {http_address} (pid {ep.pid})", flush=True)
        bare_argv = python_m("bench.bare_http", "--body-hex", servers.body.hex())
        bare = ServerProcess.start(bare_argv, LISTENING)
        servers.processes.append(bare)
        bare_address = bare.ready[1]
        if http_ask(bare_address) != servers.body:
            raise BenchError("x: the bare server does not answer the EP's answer")
        print(f"x bare http: {bare_address} (pid {bare.pid})", flush=True)
        request = seed().SerializeToString()
        servers.loads = [
            wrk_load(H_HTTP, "(h) ep", ep, http_address),
            grpc_load(H_GRPC, "(h) ep", ep, grpc_address, request),
            h2load_grpc_load(H_GRPC_C, "(h) ep", ep, grpc_address, request, answer, workdir),
            wrk_load(X_HTTP, "(x) bare aiohttp", bare, bare_address),
        ]
        for i, baseline in enumerate(baselines):
            before, before_grpc, before_http = start_ep(baseline)
            servers.processes.append(before)
            name = f"h{i}"
            if check_doors(name, before_grpc, before_http)[1] != servers.body:
                raise BenchError(f"{name}: the baseline {baseline} answers differently")
            print(f"{name} ep ({baseline}): HTTP {before_http} (pid {before.pid})", flush=True)
            label = f"({name}) ep from {baseline.name}"
            servers.loads.insert(1 + i, wrk_load(f"{name} http", label, before, before_http))
    except BaseException:
        servers.stop()
        raise
    return servers


# --- Measuring and reporting -------------------------------------------------------

Results = dict[str, list[Run]]  # load name -> its runs


@dataclass(frozen=True)
class Cell:
    """The medians of one load's runs."""

    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float
    client_cpu_us: float

    @classmethod
    def of(cls, runs: list[Run]) -> Cell:
        return cls(
            median(r.rps for r in runs),
            median(r.p50_ms for r in runs),
            median(r.p99_ms for r in runs),
            median(r.server_cpu_us for r in runs),
            median(r.client_cpu_us for r in runs),
        )


def measure(
    loads: list[Load], concurrency: int, rounds: int, seconds: float, max_calls: int
) -> Results:
    for load in loads:  # warm up: imports, caches, connections
        load.run(concurrency, 1.0, max_calls)
    results: Results = {}
    for r in range(rounds):
        for load in loads:  # interleaved
            run = load.run(concurrency, seconds, max_calls)
            results.setdefault(load.name, []).append(run)
            print(
                f"  round {r + 1} {load.name:<8} {run.rps:8.0f} req/s  p50 {_ms(run.p50_ms)} ms  "
                f"p99 {_ms(run.p99_ms)} ms  server {run.server_cpu_us:.0f} µs/req  "
                f"load generator {run.client_cpu_us:.0f} µs/req",
                flush=True,
            )
    return results


def report(loads: list[Load], results: Results, concurrency: int) -> list[str]:
    cells = {load.name: Cell.of(results[load.name]) for load in loads}
    grpc_cell = cells[H_GRPC]
    lines = [
        "| load | req/s | p50 ms | p99 ms | server CPU µs/req | load generator CPU µs/req "
        "| req/s ratio to gRPC | server CPU ratio to gRPC |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load in loads:
        c = cells[load.name]
        lines.append(
            f"| {load.label} | {c.rps:.0f} | {_ms(c.p50_ms)} | {_ms(c.p99_ms)} "
            f"| {c.server_cpu_us:.0f} | {c.client_cpu_us:.0f} | {c.rps / grpc_cell.rps:.2f} "
            f"| {c.server_cpu_us / grpc_cell.server_cpu_us:.2f} |"
        )
    h, x = cells[H_HTTP], cells[X_HTTP]
    ratio = h.rps / grpc_cell.rps
    lines += [
        "",
        f"- (h) HTTP / (h) gRPC, req/s at {concurrency}: **{ratio:.2f}** "
        f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT MET'}); server CPU "
        f"per request {h.server_cpu_us / grpc_cell.server_cpu_us:.2f}x gRPC's",
        f"- (h) HTTP / (x) bare HTTP, req/s: **{h.rps / x.rps:.2f}**; server CPU per request "
        f"{h.server_cpu_us / x.server_cpu_us:.2f}x ({h.server_cpu_us - x.server_cpu_us:.0f} "
        "µs more)",
    ]
    if H_GRPC_C in cells:
        c_cell = cells[H_GRPC_C]
        lines.append(
            f"- (h) HTTP / (h) gRPC from h2load (both load generators in C), req/s: "
            f"**{h.rps / c_cell.rps:.2f}**; server CPU per request "
            f"{h.server_cpu_us / c_cell.server_cpu_us:.2f}x"
        )
    for name in cells:
        if re.fullmatch(r"h\d+ http", name):
            b = cells[name]
            lines.append(
                f"- (h) / ({name.split()[0]}), HTTP req/s: **{h.rps / b.rps:.2f}**; server CPU "
                f"per request {h.server_cpu_us:.0f} against {b.server_cpu_us:.0f} µs "
                f"({h.server_cpu_us - b.server_cpu_us:+.0f})"
            )
    return lines


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def run(args: argparse.Namespace) -> list[str]:
    """Every measurement; the report's lines below its header."""
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed: sudo apt-get install {package}")
    with tempfile.TemporaryDirectory(prefix="ep-bench-http-") as workdir:
        return _run(args, Path(workdir))


def _run(args: argparse.Namespace, workdir: Path) -> list[str]:
    servers = start(args.baseline or [], workdir)
    try:
        results = measure(
            servers.loads, args.concurrency, args.rounds, args.seconds, args.max_calls
        )
    finally:
        servers.stop()
    return report(servers.loads, results, args.concurrency)


def main() -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="per run (wrk: whole seconds)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-calls", type=int, default=1_000_000, help="per run")
    parser.add_argument(
        "--baseline",
        type=Path,
        action="append",
        help="also load over HTTP an ep-server run from this source tree (h0, h1...)",
    )
    quick = {"rounds": 1, "seconds": 1}
    args = parse_args(parser, quick, RESULTS)
    try:
        lines = run(args)
    except BenchError as exc:
        sys.exit(f"bench.http: {exc}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    header = [
        f"## {utc_stamp()}",
        "",
        f"{machine()}, commit {commit or 'unknown'}"
        + "".join(f", (h{i}) from {b.name}" for i, b in enumerate(args.baseline or []))
        + f"; {args.concurrency} concurrent (HTTP/1.1: connections, one request each; "
        "gRPC: streams on one channel); medians of "
        f"{args.rounds} interleaved {args.seconds}-second runs per load.",
        "",
    ]
    text = "\n".join(header + lines)
    publish(text, RESULTS, "`python -m bench.http` results", write=not args.no_write)


if __name__ == "__main__":
    main()
