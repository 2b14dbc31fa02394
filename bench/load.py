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

import grpc

from ep_server.pb import execution_planner_pb2 as pb

METHOD = "/ivoa.ep.v1.ExecutionPlannerService/Ask"


async def run(
    target: str, request: bytes, concurrency: int, seconds: float, max_calls: int
) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        first = pb.AskResponse.FromString(await call(request, timeout=10))
        assert first.responseword == pb.YES, f"expected YES, got {first}"
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at and len(latencies) < max_calls:
                t0 = time.perf_counter()
                try:
                    await call(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {
        "calls": n,
        "errors": errors,
        "seconds": elapsed,
        "qps": n / elapsed,
        "p50_ms": 1000 * latencies[n // 2] if n else None,
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--request-hex", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-calls", type=int, default=200_000)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.target,
            bytes.fromhex(args.request_hex),
            args.concurrency,
            args.seconds,
            args.max_calls,
        )
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
