"""The server's own resources under adversarial requests: its memory does not
keep growing, and one heavy request does not stall it for others.

The memory test runs ``ep-server serve`` in its own process (so that its RSS
is the server's alone) and sends batches of adversarial requests with fresh
content each time; the stall test sends one taskinfo that is heavy for a
plugin to read and checks the health service answers meanwhile.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from request_generation.encoding import Ask
from request_generation.harness import Harness, ProcessHarness, serving
from request_generation.oracle import CLAIMED, MAX_TASKINFO_BYTES


@pytest.fixture(scope="module")
def ep() -> Iterator[Harness]:
    with serving("server resources") as harness:
        yield harness


def rss(pid: int | str = "self") -> int:
    """A process's resident set size in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def corpus(seed: int, size: int) -> list[bytes]:
    """``size`` adversarial requests, the same mix for every seed, with fresh
    content (task types, keys, values) per seed, so that a cache keyed by
    request content would keep growing from batch to batch."""
    rnd = random.Random(seed)

    def word(n: int = 8) -> str:
        return "".join(rnd.choice("abcé\x00😀-_./") for _ in range(rnd.randint(0, n)))

    out = []
    for i in range(size):
        kind = i % 10
        tag = f"{seed}-{i}"
        if kind == 0:  # the seed's example, with a fresh image tag: YES
            ask = Ask("uri://docker-container", {"image": f"docker.io/example:{tag}"})
        elif kind == 1:  # unclaimed task type: NO
            ask = Ask(f"uri://unknown-{tag}", {word(): word()})
        elif kind == 2:  # bad task type and NaN
            ask = Ask(f"not a uri {tag}", {word(): math.nan, "k": [math.inf]})
        elif kind == 3:  # docker-shaped, bad fields
            ports = [{"internal": rnd.randint(-5, 70000), "protocol": word(3)} for _ in range(4)]
            taskinfo = {"image": word(20), "privileged": True, "ports": ports, tag: None}
            ask = Ask("uri://docker-container", taskinfo)
        elif kind == 4:  # deep, past the decoder
            node: Any = {"leaf": tag}
            for _ in range(rnd.randint(33, 120)):
                node = {word(2): node} if rnd.random() < 0.7 else [node]
            ask = Ask("uri://docker-container", {"d": node})
        elif kind == 5:  # absurd resources
            resources = {"cores": {"min": -rnd.randint(1, 2**63)}, "memory": {"min": 9, "max": 1}}
            ask = Ask("uri://jupyter-notebook", {"notebook": f"/x/{tag}"}, resources)
        elif kind == 6:  # over the taskinfo limit
            ask = Ask("uri://docker-container", {tag: "x" * (MAX_TASKINFO_BYTES + 10)})
        elif kind == 7:  # jupyter
            ask = Ask("uri://jupyter-notebook", {"notebook": f"https://e.org/{tag}.ipynb"})
        elif kind == 8:  # random JSON
            ask = Ask(rnd.choice(CLAIMED), {word(): [word(), rnd.random(), None, {tag: True}]})
        else:  # garbage
            out.append(rnd.randbytes(rnd.randint(1, 200)))
            continue
        out.append(ask.encode())
    return out


def run_batch(ep: Harness, requests: list[bytes], window: int = 8) -> None:
    """Send ``requests``, ``window`` in flight at once, checking each."""
    for start in range(0, len(requests), window):
        futures = [ep.send_async(data) for data in requests[start : start + window]]
        for data, future in zip(requests[start : start + window], futures, strict=True):
            ep.check(ep.result(future), data[:200], named_field=False)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_does_not_keep_growing():
    """After a warm-up, two equal batches of adversarial requests (each with
    fresh content); RSS of the server (``ep-server serve`` with the default
    config, in its own process) must grow less than 20 MiB over the first
    batch, and the second batch must grow much less than the first: a leak
    grows each batch alike, warm-up only the first.

    The 20 MiB bound: one batch moves ~2,000 requests and ~60 MiB of request
    bytes (10% are 256 KiB taskinfos); the server's steady working set
    (malloc arenas reaching their high-water mark, gRPC's buffers, the
    plugin thread pool) settles during the warm-up. A leak of a single
    oversize taskinfo per 100 requests would add ~5 MiB; of 1 KiB per
    request, 2 MiB, which the second-batch rule (at most half the first,
    or 3 MiB) catches when it repeats.
    """
    batch = 2000
    ep = ProcessHarness()
    try:
        run_batch(ep, corpus(1, 600))  # warm-up
        start = rss(ep.proc.pid)
        run_batch(ep, corpus(2, batch))
        middle = rss(ep.proc.pid)
        run_batch(ep, corpus(3, batch))
        end = rss(ep.proc.pid)
        first, second = middle - start, end - middle
        mib = 1024 * 1024
        print(
            f"\nserver RSS: start {start / mib:.1f} MiB, +{first / mib:.2f} MiB over batch 1, "
            f"+{second / mib:.2f} MiB over batch 2 ({batch} requests each)"
        )
        assert first < 20 * mib
        assert second <= max(first / 2, 3 * mib)
        ep.assert_healthy()
    finally:
        ep.close()


def test_a_heavy_taskinfo_does_not_stall_the_server(ep):
    body = Ask("uri://docker-container", {"image": "a", "ports": [{}] * 16000}).encode()
    timings: dict[str, float] = {}

    def ask() -> None:
        t0 = time.monotonic()
        try:
            ep.raw_ask(body, timeout=60)
        finally:
            timings["ask"] = time.monotonic() - t0

    worker = threading.Thread(target=ask)
    worker.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    ep.health.Check(health_pb2.HealthCheckRequest(), timeout=60)
    timings["health"] = time.monotonic() - t0
    worker.join(60)
    ep.assert_healthy()
    deadline = ep.settings.plugins.deadline
    assert timings["health"] < 1.0, timings
    assert timings["ask"] < deadline + 1.0, timings
