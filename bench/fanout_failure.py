"""The fan-out's failure measurement: ``ask_many`` over N EP endpoints plus
one that accepts TCP connections and never answers and one that refuses
connections (a bound, non-listening socket).

ask_many must return all N answers, report those two as failures (deadline
exceeded; unreachable) and end when its deadline expires. Each run's counts
and times are printed, checked and tabled by bench/fanout.py.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from bench.harness import BenchError
from ep_server.client import Client, FailureKind, Result, Site, TaskQuery


@dataclass(frozen=True)
class FailureRun:
    """How one run ended, and what was wrong with it (nothing when ``ok``)."""

    answers: int  # YES answers from the N EP endpoints
    hang: str  # how the never-answering endpoint ended
    refused: str  # how the refusing endpoint ended
    last_answer: float  # seconds until the last EP answer arrived
    ended: float  # seconds until ask_many finished
    ok: bool
    problems: tuple[str, ...]


def _refusing_socket() -> socket.socket:
    """A bound loopback port with no listen(): connections get a RST."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _probe(address: str, expect_refused: bool) -> None:
    """Check that the endpoint really accepts, or really refuses, TCP."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except ConnectionRefusedError:
        if not expect_refused:
            raise BenchError(f"{address} refused a connection; it should accept") from None
        return
    if expect_refused:
        raise BenchError(f"{address} accepted a connection; it should refuse")


async def failure_run(
    addresses: list[str], hang_address: str, query: TaskQuery, deadline: float
) -> FailureRun:
    """One ask_many of ``query`` over the EPs at ``addresses``, the
    never-answering endpoint at ``hang_address`` and a refusing one."""
    sites = [Site(f"ep{i:03d}", a) for i, a in enumerate(addresses)]
    with _refusing_socket() as refusing:
        refused = Site("refused", f"127.0.0.1:{refusing.getsockname()[1]}")
        hang = Site("hang", hang_address)
        _probe(hang.address, expect_refused=False)
        _probe(refused.address, expect_refused=True)
        arrivals: list[tuple[float, Result]] = []
        start = time.perf_counter()
        async with Client() as client:
            async for result in client.ask_many([*sites, hang, refused], query, deadline=deadline):
                arrivals.append((time.perf_counter() - start, result))
            ended = time.perf_counter() - start
    by_name = {r.site.name: (t, r) for t, r in arrivals}
    ep_results = [by_name[s.name] for s in sites if s.name in by_name]
    answers = sum(1 for _, r in ep_results if r.answer is not None and r.answer.yes)
    last_answer = max((t for t, r in ep_results if r.answer is not None), default=float("nan"))

    def ended_as(site: Site, kind: FailureKind, problems: list[str]) -> str:
        if site.name not in by_name:
            problems.append(f"{site.name}: no result at all")
            return "missing"
        t, result = by_name[site.name]
        failure = result.failure
        if failure is None:
            problems.append(f"{site.name}: answered {result.answer}, expected a failure")
            return "answered"
        if failure.kind is not kind:
            problems.append(f"{site.name}: {failure.kind.value}, expected {kind.value}")
        return f"{failure.describe()} (after {failure.attempts} attempt(s), at {t:.2f} s)"

    problems: list[str] = []
    hang_text = ended_as(hang, FailureKind.DEADLINE_EXCEEDED, problems)
    refused_text = ended_as(refused, FailureKind.UNREACHABLE, problems)
    if len(arrivals) != len(sites) + 2:
        problems.append(f"{len(arrivals)} results for {len(sites) + 2} endpoints")
    if answers != len(sites):
        problems.append(f"{answers} YES answers from {len(sites)} EP endpoints")
    if not last_answer < deadline:
        problems.append(f"last EP answer at {last_answer:.2f} s, deadline {deadline:g} s")
    if not deadline * 0.9 <= ended <= deadline + 1.0:
        problems.append(f"ask_many ended at {ended:.2f} s, deadline {deadline:g} s")
    return FailureRun(
        answers, hang_text, refused_text, last_answer, ended, not problems, tuple(problems)
    )


async def failure_runs(
    addresses: list[str], hang: str, query: TaskQuery, deadline: float, repeats: int
) -> list[FailureRun]:
    """``repeats`` failure runs, one after another, each printed as it ends."""
    n = len(addresses)
    print(f"failure measurement: {n} EP endpoints + 1 never answers + 1 refuses...", flush=True)
    failures = []
    for turn in range(repeats):
        f = await failure_run(addresses, hang, query, deadline)
        failures.append(f)
        print(
            f"  round {turn + 1}: {f.answers}/{n} YES, last at {f.last_answer:.3f} s, "
            f"ended at {f.ended:.3f} s{'' if f.ok else ' WRONG: ' + '; '.join(f.problems)}",
            flush=True,
        )
    return failures


def failure_table(failures: list[FailureRun], n: int, deadline: float) -> list[str]:
    """The report's failure section: a heading line and one table row a run."""
    return [
        f"Failure measurement ({len(failures)} runs, ask_many deadline "
        f"{deadline:g} s, {n} EP endpoints + 1 that accepts TCP and never "
        "answers + 1 that refuses connections):",
        "",
        "| run | YES answers | last answer s | ask_many ended s | never answers | refuses "
        "| check |",
        "| ---: | ---: | ---: | ---: | --- | --- | --- |",
        *(
            f"| {i} | {f.answers}/{n} | {f.last_answer:.3f} | {f.ended:.3f} | {f.hang} "
            f"| {f.refused} | {'ok' if f.ok else 'WRONG: ' + '; '.join(f.problems)} |"
            for i, f in enumerate(failures, start=1)
        ),
    ]
