"""Per-call µs of the pipeline wrapper and of one Ask's metrics, in process.

Measures, for the ep_server found first on ``sys.path``:

- ``pipeline``: ``CallPipeline.run`` (with an Authenticator, a Metrics and
  the server's anonymous list) around a handler that returns at once, for
  an anonymous call with gRPC-like metadata; the coroutine is driven by
  hand, so no event loop cost is counted;
- ``metrics``: the recordings of one Ask: ``rpc`` + ``plugin`` + ``answer``.

``python -m bench.micro_pipeline [--baseline TREE]`` prints the medians of
several rounds; with ``--baseline``, the same numbers for the ep_server in
TREE (run in a subprocess with TREE first on ``sys.path``), rounds of the
two interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CALLS = 20_000
ROUNDS = 7


class _Inbound:
    """An anonymous gRPC call, as the pipeline sees it."""

    __slots__ = ("request_id",)
    transport = "grpc"
    metadata = (("user-agent", "grpc-python-asyncio/1.76.0 grpc-c/51.0.0 (linux; chttp2)"),)

    def __init__(self) -> None:
        self.request_id = ""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    def peer_subject(self) -> str | None:
        return None

    def time_remaining(self) -> float | None:
        return None


def _pipeline_loop() -> Callable[[int], None]:
    from ep_server.auth import Authenticator
    from ep_server.config import AuthConfig
    from ep_server.metrics import Metrics
    from ep_server.pipeline import CallPipeline

    pipeline = CallPipeline(Authenticator(AuthConfig()), metrics=Metrics())

    async def handler(request: Any, call: Any) -> Any:
        return request

    run = pipeline.run

    def loop(n: int) -> None:
        for _ in range(n):
            coroutine = run("Ask", _Inbound(), handler, None)
            try:
                coroutine.send(None)
            except StopIteration:
                continue
            raise AssertionError("the handler waited")

    return loop


def _metrics_loop() -> Callable[[int], None]:
    from ep_server.metrics import Metrics

    metrics = Metrics()
    rpc, plugin, answer = metrics.rpc, metrics.plugin, metrics.answer

    def loop(n: int) -> None:
        for _ in range(n):
            rpc("Ask", "OK", 0.0004)
            plugin("docker", "yes", 0.00002)
            answer("YES", 1)

    return loop


def _inbound_only() -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            _Inbound()

    return loop


def measure_once() -> dict[str, float]:
    """One round: µs per call of each piece (the pipeline's less making the inbound)."""
    result = {}
    loops = {"pipeline": _pipeline_loop(), "metrics": _metrics_loop(), "inbound": _inbound_only()}
    for name, loop in loops.items():
        loop(1000)  # warm up, series made
        started = time.perf_counter_ns()
        loop(CALLS)
        result[name] = (time.perf_counter_ns() - started) / CALLS / 1000
    result["pipeline"] -= result.pop("inbound")
    return result


def _round_in(tree: str) -> dict[str, float]:
    """One round in a fresh interpreter, ``tree`` first on its path (this
    file is loaded by its path: bench/ on sys.path would shadow ``http``)."""
    code = (
        "import sys, json, importlib.util\n"
        f"sys.path.insert(0, {tree!r})\n"
        f"spec = importlib.util.spec_from_file_location('micro_pipeline', {__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(module.measure_once()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a tree whose ep_server to measure too")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    trees = {"after": str(Path(__file__).parent.parent)}
    if args.baseline:
        trees = {"before": args.baseline, **trees}
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            rounds[label].append(_round_in(tree))
    for label, results in rounds.items():
        medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(label, " ".join(f"{k} {v:.2f} µs" for k, v in medians.items()))


if __name__ == "__main__":
    main()
