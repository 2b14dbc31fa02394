"""Where an Ask's CPU goes, piece by piece, in process and without gRPC.

Run: ``.venv/bin/python -m bench.pieces [--baseline DIR]``. Each piece is
timed with ``time.thread_time_ns`` (this thread's CPU, so other processes
on the machine do not count) per Ask, on the distinct, varying requests of
bench/asks.py, a fresh slice of them in each of ``--rounds`` rounds (after
one warm-up round), in ``--repeat`` child processes per source tree, and
reported as the median over all those rounds:

- the pipeline wrapper: ``CallPipeline.run`` (as the server builds it,
  with its metrics) around a handler that does nothing, less awaiting that
  handler directly;
- protobuf to TaskQuery: ``wire.decoder`` and ``wire.query_from_request``
  on the request's bytes, less protobuf's own ``FromString`` (which a bare
  server pays too);
- consulting the plugins: ``Planner.ask`` with one (and four) plugins that
  answer a ready verdict at once, so the plugins' own time is ~0;
- the docker plugin's ``ep_evaluate`` (its ``decide()``), and jupyter's;
- Answer to protobuf: ``wire.answer_to_proto`` on the docker plugin's
  answers (one offer) and the synthetic plugins' (four);
- metrics: ``Metrics.rpc``, ``plugin`` (once per plugin), ``answer`` and
  the in-flight gauge when the Metrics has one; the pipeline's row
  includes its own rpc and in-flight recording.

Each answer is checked (every request here must get YES). The same code
runs in child processes, each with its source tree first on ``sys.path``
(checked by the files it imported), the trees' processes alternating;
``--baseline DIR`` adds DIR's column and the change (this tree - DIR). In-process numbers
understate each piece: inside the server, with gRPC's own work around it,
the same Python costs 2-3x more (issue 16).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

from ep_server import Claim, Offer, Verdict, hookimpl

#: The rows, in order, with what each measures.
PIECES: Final = {
    "pipeline": "pipeline wrapper (CallPipeline.run around a no-op handler, with metrics)",
    "query": "protobuf -> TaskQuery (decoder + query_from_request - FromString), docker",
    "query_synthetic": "protobuf -> TaskQuery, synthetic",
    "planner1": "consulting the plugins: Planner.ask, 1 instant plugin",
    "planner4": "consulting the plugins: Planner.ask, 4 instant plugins",
    "docker": "docker plugin's ep_evaluate (decide)",
    "jupyter": "jupyter plugin's ep_evaluate (decide)",
    "answer": "Answer -> protobuf (answer_to_proto), docker, 1 offer",
    "answer_synthetic": "Answer -> protobuf, synthetic, 4 offers",
    "metrics1": "metrics: rpc + 1 plugin + answer (+ in-flight)",
    "metrics4": "metrics: rpc + 4 plugins + answer (+ in-flight)",
}


# --- The child: measures the tree first on sys.path ---------------------------------


def _settle_heap() -> None:
    """Collect, then move every object alive now out of the collector's
    sight: the requests, answers and results the bench keeps would otherwise
    make a full collection, which a server in its steady state does not
    pay, land inside whichever piece happened to be timed then."""
    gc.collect()
    gc.freeze()


def _per_call(fn: Callable[[Any], Any], items: Sequence[Any]) -> tuple[float, list[Any]]:
    """µs of this thread's CPU per ``fn(item)``, and the results."""
    out: list[Any] = []
    append = out.append
    _settle_heap()
    t0 = time.thread_time_ns()
    for item in items:
        append(fn(item))
    return (time.thread_time_ns() - t0) / len(items) / 1000, out


async def _per_await(
    fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any]
) -> tuple[float, list[Any]]:
    """µs of this thread's CPU per ``await fn(item)``, and the results."""
    out: list[Any] = []
    append = out.append
    _settle_heap()
    t0 = time.thread_time_ns()
    for item in items:
        append(await fn(item))
    return (time.thread_time_ns() - t0) / len(items) / 1000, out


class _Instant:
    """A plugin that claims the docker task type and answers a ready YES."""

    def __init__(self, n: int) -> None:
        self.verdict = Verdict.yes(Offer(f"uri://instant-{n}", {"endpoint": "http://x/"}))
        self.claim = Claim("uri://docker-container", (f"uri://instant-{n}",))

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [self.claim]

    @hookimpl
    async def ep_evaluate(self, query: Any) -> Verdict:
        return self.verdict


class _Source:
    def __init__(self, name: str, plugin: object) -> None:
        self.name, self.plugin = name, plugin

    def load(self) -> object:
        return self.plugin


class _Inbound:
    """A gRPC call as the pipeline sees it: what grpc.aio hands over."""

    transport = "grpc"
    metadata = (("user-agent", "grpc-python/1.85.1 grpc-c/52.0.0 (linux; chttp2)"),)

    def __init__(self) -> None:
        self.request_id = ""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:45678"

    def peer_subject(self) -> str | None:
        return None

    def time_remaining(self) -> float | None:
        return 9.9


def _check(ok: Iterable[bool], what: str) -> None:
    bad = sum(1 for x in ok if not x)
    if bad:
        raise SystemExit(f"bench.pieces: {bad} wrong answers from {what}")


async def _measure(
    request: Callable[[str, int], Any], n: int, rounds: int
) -> dict[str, list[float]]:
    """Each piece's µs per Ask in each round; ``request(kind, i)`` is bench/asks.py's."""
    from ep_server import wire
    from ep_server.config import Settings
    from ep_server.host import detect_host
    from ep_server.metrics import Metrics
    from ep_server.pb import execution_planner_pb2 as pb
    from ep_server.pipeline import CallPipeline
    from ep_server.planner import Planner
    from ep_server.plugins import PluginCaller, default_sources, load_registry

    synthetic = [f"synthetic{i:02d}=fake_plugins.synthetic:P{i:02d}" for i in range(20)]
    settings = Settings.model_validate(
        {
            "plugins": {"modules": synthetic},
            "plugin": {"jupyter": {"kernels": ["python"]}},
            "schedule": {"enabled": False},
        }
    )
    host = detect_host(settings.host)
    registry = load_registry(settings, host, default_sources(settings))
    caller = PluginCaller(settings.plugins.threads, settings.plugins.deadline)
    instant = {
        k: load_registry(settings, host, [_Source(f"i{j}", _Instant(j)) for j in range(k)])
        for k in (1, 4)
    }
    cfg = settings.server
    limits = wire.Limits(cfg.max_taskinfo_bytes, cfg.max_taskinfo_depth, frozenset(registry.index))
    metrics = Metrics()
    server = importlib.import_module("ep_server.server")
    if hasattr(server, "_pipeline"):  # as the server builds it
        pipeline = server._pipeline(settings, metrics)
    else:
        pipeline = CallPipeline(metrics=metrics)
    parse, decode = pb.AskRequest.FromString, wire.decoder(pb.AskRequest)
    real = Planner(registry, caller)
    (docker,) = registry.ep_evaluate("uri://docker-container")
    (jupyter,) = registry.ep_evaluate("uri://jupyter-notebook")
    inflight = getattr(metrics, "inflight", None)

    def data(kind: str, start: int) -> list[bytes]:
        return [request(kind, i).SerializeToString() for i in range(start, start + n)]

    def queries(raw: list[bytes]) -> list[Any]:
        return [wire.query_from_request(parse(b), limits) for b in raw]

    sets = {k: data(k, 0) for k in ("docker", "synthetic", "jupyter")}
    # Answers from requests the timed pieces never see, so that computing
    # them warms nothing those pieces could use.
    answers = {
        k: [await real.ask(q, 9.9) for q in queries(data(k, 10 * n))]
        for k in ("docker", "synthetic")
    }
    _check((a.yes for a in answers["docker"]), "the docker plugin")
    _check((len(a.offers) == 4 for a in answers["synthetic"]), "the synthetic plugins")

    async def noop(request: Any, call: Any) -> None:
        return None

    def record(plugins: int) -> Callable[[int], None]:
        def one(_: int) -> None:
            with inflight() if inflight else nullcontext():
                metrics.rpc("Ask", "OK", 0.001)
                for p in range(plugins):
                    metrics.plugin(f"synthetic{p:02d}", "yes", 0.0002)
                metrics.answer("YES", plugins)

        return one

    async def docker_verdict(query: Any) -> Any:
        value = docker.function(query)
        return await value if inspect.isawaitable(value) else value

    def asker(planner: Planner) -> Callable[[Any], Awaitable[Any]]:
        return lambda query: planner.ask(query, 9.9)

    inbound = _Inbound()
    results: dict[str, list[float]] = {name: [] for name in PIECES}
    size = n // (rounds + 1)
    for r in range(rounds + 1):
        part = slice(r * size, (r + 1) * size)
        raw = {k: v[part] for k, v in sets.items()}
        q = {k: queries(v) for k, v in raw.items()}
        bare, _ = await _per_await(lambda b: noop(b, None), raw["docker"])
        wrapped, _ = await _per_await(
            lambda b: pipeline.run("Ask", inbound, noop, b), raw["docker"]
        )
        results["pipeline"].append(wrapped - bare)
        for kind, row in (("docker", "query"), ("synthetic", "query_synthetic")):
            converted, _ = _per_call(
                lambda b: wire.query_from_request(decode(b), limits), raw[kind]
            )
            results[row].append(converted - _per_call(parse, raw[kind])[0])
        for k in (1, 4):
            µs, got = await _per_await(asker(Planner(instant[k], caller)), q["docker"])
            results[f"planner{k}"].append(µs)
            _check((len(a.offers) == k for a in got), f"the planner with {k} instant plugins")
        µs, got = await _per_await(docker_verdict, q["docker"])
        results["docker"].append(µs)
        _check((bool(v.offers) for v in got), "ep-plugin-docker")
        µs, got = _per_call(jupyter.function, q["jupyter"])
        results["jupyter"].append(µs)
        _check((bool(v.offers) for v in got), "ep-plugin-jupyter")
        for kind, row, offers in (("docker", "answer", 1), ("synthetic", "answer_synthetic", 4)):
            µs, got = _per_call(wire.answer_to_proto, answers[kind][part])
            results[row].append(µs)
            _check((p.responseword == pb.YES and len(p.offers) == offers for p in got), row)
        for k in (1, 4):
            results[f"metrics{k}"].append(_per_call(record(k), range(size))[0])
    caller.close()
    return {name: values[1:] for name, values in results.items()}  # round 0 warms up


def _child(n: int, rounds: int, asks_file: str, modules: list[str]) -> None:
    """Measure, and print the pieces and the files ``modules`` came from as JSON."""
    spec = importlib.util.spec_from_file_location("bench_asks", asks_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_asks"] = module
    spec.loader.exec_module(module)
    pieces = asyncio.run(_measure(module.request, n, rounds))
    files = {m: importlib.import_module(m).__file__ for m in modules}
    json.dump({"pieces": pieces, "files": files}, sys.stdout)


# --- The parent: a child per tree, side by side --------------------------------------


def measure_tree(tree: Path, n: int, rounds: int) -> dict[str, list[float]]:
    """The pieces of ``tree``'s code, from a child process that imports it
    (checked by the files it reports)."""
    from bench.cost import CHECKED_MODULES, stray_files, tree_path
    from bench.harness import ROOT, BenchError

    argv = [
        sys.executable, "-P", str(Path(__file__).resolve()), "--child",
        "--n", str(n), "--rounds", str(rounds), "--asks", str(ROOT / "bench" / "asks.py"),
        "--modules", ",".join(CHECKED_MODULES),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": tree_path(tree)}
    out = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BenchError(f"pieces of {tree}: {out.stderr.strip()[-2000:]}")
    result = json.loads(out.stdout)
    stray = stray_files(result["files"], tree)
    if stray:
        raise BenchError(f"pieces of {tree} imported code from elsewhere: {stray}")
    pieces: dict[str, list[float]] = result["pieces"]
    return pieces


def report(columns: dict[str, dict[str, float]]) -> list[str]:
    names = list(columns)
    header = (
        "| piece, µs per Ask | " + " | ".join(names) + (" | change |" if len(names) > 1 else " |")
    )
    lines = [header, "| --- |" + " ---: |" * (len(names) + (len(names) > 1))]
    for key, label in PIECES.items():
        cells = [columns[name].get(key, float("nan")) for name in names]
        change = f" | {cells[0] - cells[1]:+.1f}" if len(cells) > 1 else ""
        lines.append(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + change + " |")
    return lines


def main() -> None:
    if "--child" in sys.argv:
        child = argparse.ArgumentParser()
        child.add_argument("--child", action="store_true")
        child.add_argument("--n", type=int, required=True)
        child.add_argument("--rounds", type=int, required=True)
        child.add_argument("--asks", required=True)
        child.add_argument("--modules", required=True)
        a = child.parse_args()
        _child(a.n, a.rounds, a.asks, a.modules.split(","))
        return
    from bench.harness import (
        ROOT,
        BenchError,
        machine,
        median,
        new_parser,
        parse_args,
        publish,
        utc_stamp,
    )

    parser = new_parser(__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="distinct requests per kind")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2, help="child processes per tree")
    parser.add_argument("--baseline", type=Path, help="also measure this source tree's code")
    quick = {"requests": 300, "rounds": 2, "repeat": 1}
    args = parse_args(parser, quick, ROOT / "bench" / "results-cost.md")
    trees = {"this tree": ROOT, **({args.baseline.name: args.baseline} if args.baseline else {})}
    rounds: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    try:
        for _ in range(args.repeat):  # the trees' children alternate
            for name, tree in trees.items():
                for key, values in measure_tree(tree, args.requests, args.rounds).items():
                    rounds[name].setdefault(key, []).extend(values)
    except BenchError as exc:
        sys.exit(f"bench.pieces: {exc}")
    columns = {name: {k: median(v) for k, v in pieces.items()} for name, pieces in rounds.items()}
    header = [
        f"## Pieces, {utc_stamp()}",
        "",
        f"{machine()}; `python -m bench.pieces`, in process, this thread's CPU per Ask, "
        f"medians of {args.repeat} x {args.rounds} rounds of "
        f"{args.requests // (args.rounds + 1):,} distinct requests (after one warm-up round) "
        "per tree, the trees' processes alternating.",
        "",
    ]
    text = "\n".join(header + report(columns))
    publish(
        text,
        ROOT / "bench" / "results-cost.md",
        "`python -m bench.cost` results",
        write=not args.no_write,
    )


if __name__ == "__main__":
    main()
