"""The load generator, run as its own process: N concurrent Ask calls on one
channel for a bounded time and count, reporting QPS and latency as JSON.

Requests are serialized once and responses kept as bytes, so the generator
spends as little CPU as it can; the first response is decoded and checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TypedDict

import grpc

from bench.harness import ask_bytes, percentile
from ep_server.pb import execution_planner_pb2 as pb


class LoadResult(TypedDict):
    """What one run prints, as a JSON object."""

    calls: int
    errors: dict[str, int]  # status code name -> count
    seconds: float
    qps: float
    p50_ms: float | None  # None when no call succeeded
    p99_ms: float | None


async def run(
    target: str, request: bytes, concurrency: int, seconds: float, max_calls: int, connections: int
) -> LoadResult:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    # Each channel its own TCP connection (a local subchannel pool), so that
    # SO_REUSEPORT can spread them over several server processes.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    calls = [ask_bytes(ch) for ch in channels]
    try:
        for call in calls:
            first = pb.AskResponse.FromString(await call(request, timeout=10))
            assert first.responseword == pb.YES, f"expected YES, got {first}"
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
            while time.perf_counter() < stop_at and len(latencies) < max_calls:
                t0 = time.perf_counter()
                try:
                    await call(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(calls[i % connections]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    n = len(latencies)
    return {
        "calls": n,
        "errors": errors,
        "seconds": elapsed,
        "qps": n / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.5) if n else None,
        "p99_ms": 1000 * percentile(latencies, 0.99) if n else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--request-hex", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-calls", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.target,
            bytes.fromhex(args.request_hex),
            args.concurrency,
            args.seconds,
            args.max_calls,
            args.connections,
        )
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
