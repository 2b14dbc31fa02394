"""Planner.ask per Ask, in process: what consulting the plugins costs.

Each case builds a registry and a planner from one source tree and times
``Planner.ask`` over queries that vary (no two in a row alike):

- ``docker``: the docker plugin's hooks, on image references and taskinfos
  that vary (some of them refused);
- ``trivial``: one async plugin that returns a fixed Verdict (what is left is
  the consulting itself);
- ``synthetic``: the 20 synthetic plugins of ``make bench``'s (c) server,
  four of them claiming the asked task type;
- ``plain``: one plain (threaded) plugin that returns a fixed Verdict (the
  thread hand-off).

Each run is a child process with the tree under test first on ``sys.path``,
so the code of two trees (this one and, say, an unmodified copy of main) is
compared in the same run, rounds interleaved::

    python -m bench.micro_planner --baseline /tmp/baseline --rounds 7

Printed: per case and tree, the median over rounds of wall-clock µs per Ask
with one Ask at a time (``c1``) and with 16 at once (``c16``), and the
process CPU µs per Ask (``cpu1``, threads included).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CASES = ("docker", "trivial", "synthetic", "plain")


def child(root: Path, case: str, asks: int) -> dict[str, float]:
    """Time ``asks`` Asks of ``case`` on the code under ``root``."""
    for extra in (root / "plugins" / "ep-plugin-docker", root / "tests", root):
        sys.path.insert(0, str(extra))
    import ep_server

    assert Path(ep_server.__file__).resolve().is_relative_to(root.resolve()), ep_server.__file__
    from ep_server.model import (
        Cause,
        Claim,
        HostInfo,
        IntRange,
        Offer,
        Reason,
        Resources,
        TaskQuery,
        Verdict,
    )
    from ep_server.planner import Planner
    from ep_server.plugins import PluginCaller, load_registry
    from ep_server.testing import build_settings

    class Source:
        def __init__(self, name: str, plugin: Any) -> None:
            self.name, self.plugin = name, plugin

        def load(self) -> Any:
            return self.plugin

    fixed = Verdict.yes(Offer("uri://trivial", {"endpoint": "http://example.org/x"}))
    hookimpl = ep_server.hookimpl

    class Trivial:
        @hookimpl
        def ep_claims(self) -> list[Claim]:
            return [Claim("uri://trivial", ("uri://trivial",))]

        @hookimpl
        async def ep_evaluate(self, query: TaskQuery) -> Verdict:
            return fixed

    class Plain:
        @hookimpl
        def ep_claims(self) -> list[Claim]:
            return [Claim("uri://trivial", ("uri://trivial",))]

        @hookimpl
        def ep_evaluate(self, query: TaskQuery) -> Verdict:
            return fixed

    def docker_query(i: int) -> TaskQuery:
        info: dict[str, Any] = {"image": f"docker.io/library/img{i % 5000}:1.{i % 97}"}
        if i % 3 == 0:
            info["platform"] = "linux/amd64"
        if i % 7 == 0:
            info["image"] = f"registry.example.org:5000/team/tool{i}@sha256:{i:064x}"
        if i % 11 == 0:
            info["image"] = f"Not A Reference {i}"  # refused
        if i % 13 == 0:
            info["privileged"] = True  # refused by the default policy
        return TaskQuery("uri://docker-container", info, Resources(IntRange(1 + i % 4)))

    def other_query(tasktype: str, i: int) -> TaskQuery:
        info = {"image": f"docker.io/example{i % 5000}:1.{i % 89}"}
        return TaskQuery(tasktype, info, Resources(IntRange(1 + i % 4)))

    if case == "docker":
        sources = [Source("docker", importlib.import_module("ep_plugin_docker.hooks"))]
        queries = [docker_query(i) for i in range(asks)]
    elif case == "trivial":
        sources = [Source("trivial", Trivial())]
        queries = [other_query("uri://trivial", i) for i in range(asks)]
    elif case == "plain":
        sources = [Source("plain", Plain())]
        queries = [other_query("uri://trivial", i) for i in range(asks)]
    else:
        synthetic = importlib.import_module("fake_plugins.synthetic")
        sources = [Source(f"synthetic{i:02d}", getattr(synthetic, f"P{i:02d}")) for i in range(20)]
        queries = [other_query(synthetic.ASKED, i) for i in range(asks)]
    host = HostInfo(cores=8, memory=16 * 2**30, architecture="x86_64", os="linux")
    registry = load_registry(build_settings({}), host, sources)

    class Metrics:
        """Takes what the planner reports and does nothing with it."""

        def plugin(self, plugin: str, outcome: str, seconds: float) -> None:
            pass

    planner = Planner(registry, PluginCaller(deadline=2.0), Metrics())
    _ = (Cause, Reason)

    async def one_at_a_time(batch: list[TaskQuery]) -> None:
        for query in batch:
            await planner.ask(query)

    async def sixteen_at_once(batch: list[TaskQuery]) -> None:
        share = len(batch) // 16
        parts = [batch[k * share : (k + 1) * share] for k in range(16)]
        await asyncio.gather(*(one_at_a_time(part) for part in parts))

    async def main() -> dict[str, float]:
        answer = await planner.ask(queries[1])
        assert answer.offers or answer.reasons
        await one_at_a_time(queries[: asks // 10])  # warm-up
        cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
        await one_at_a_time(queries)
        cpu1, wall1 = time.process_time_ns(), time.perf_counter_ns()
        await sixteen_at_once(queries)
        wall2 = time.perf_counter_ns()
        return {
            "c1": (wall1 - wall0) / asks / 1e3,
            "cpu1": (cpu1 - cpu0) / asks / 1e3,
            "c16": (wall2 - wall1) / (asks // 16 * 16) / 1e3,
        }

    try:
        return asyncio.run(main())
    finally:
        planner.caller.close()


def parent(trees: dict[str, Path], cases: list[str], rounds: int, asks: int) -> None:
    seen: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for case in cases:
            for name, root in trees.items():
                argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(root)]
                argv += ["--cases", case, "--asks", str(asks)]
                out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
                seen.setdefault((case, name), []).append(json.loads(out.stdout))
    print(f"median of {rounds} rounds, {asks} asks each; µs per Ask")
    print(f"{'case':<10} {'tree':<10} {'c1':>8} {'cpu1':>8} {'c16':>8}")
    for (case, name), runs in seen.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("c1", "cpu1", "c16")}
        print(f"{case:<10} {name:<10} {med['c1']:8.2f} {med['cpu1']:8.2f} {med['c16']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline", type=Path, help="a second source tree to compare")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--asks", type=int, default=20000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.cases, args.asks)))
        return
    trees = {"this": HERE}
    if args.baseline is not None:
        trees = {"baseline": args.baseline, "this": HERE}
    parent(trees, args.cases.split(","), args.rounds, args.asks)


if __name__ == "__main__":
    main()
