"""In-process cost of the Ask conversions: request to TaskQuery, Answer to reply.

Run: ``.venv/bin/python -m bench.micro_wire [--baseline /path/to/other/tree]``.

Measures, per Ask, in microseconds:

  query     ``wire.query_from_request`` on a decoded ``AskRequest`` for the
            docker task type: distinct image references and taskinfos (ports,
            environment, platform, entrypoint), some with resources;
  answer    ``wire.answer_to_proto`` on the docker plugin's own answers to
            those queries (its ``decide`` with the default config: one offer),
  answer-3  the same with three configured services (three offers each).

Each tree (this one, and ``--baseline`` if given) is measured in a process
of its own with that tree first on ``sys.path``; the processes take turns,
a round each (every conversion over all ``--requests`` requests), for
``--rounds`` rounds, so that both see the same load on a shared machine.
Reported: the median and the lowest of the rounds. A hot loop in one process
understates what the same code costs inside the server (the cache is shared
with gRPC's own work): compare trees, not the absolute numbers with the
server's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
PLUGIN = "plugins/ep-plugin-docker"


def _taskinfo(i: int) -> dict[str, Any]:
    info: dict[str, Any] = {"image": f"registry{i % 97}.example.org/team{i % 13}/app{i}:1.{i}"}
    if i % 2:
        info["ports"] = [{"internal": 8000 + i % 1000, "external": 20000 + i % 1000}]
    if i % 3 == 0:
        info["environment"] = {"MODE": f"run{i}", "LEVEL": str(i % 7)}
        info["privileged"] = False
    if i % 5 == 0:
        info["platform"] = "linux/amd64"
    if i % 7 == 0:
        info["entrypoint"] = ["/bin/sh", "-c", f"echo {i}"]
    return info


def _serve(count: int) -> None:
    """Measure this process's tree: µs per call of each conversion, a round
    for each line read from stdin, each round's results a JSON line."""
    from google.protobuf import struct_pb2

    # The plugin is not on mypy's path (make lint checks it on its own).
    docker_config = importlib.import_module("ep_plugin_docker.config")
    docker_decide = importlib.import_module("ep_plugin_docker.decide")
    DockerConfig, Site, decide = (
        docker_config.DockerConfig,
        docker_decide.Site,
        docker_decide.decide,
    )
    from ep_server import wire
    from ep_server.model import HostInfo
    from ep_server.pb import execution_planner_pb2 as pb
    from ep_server.planner import Answer

    host = HostInfo(cores=64, memory=256 * 2**30, architecture="x86_64", os="linux")
    limits = wire.Limits(known_tasktypes=frozenset({"uri://docker-container"}))
    decode = wire.decoder(pb.AskRequest)
    requests = []
    for i in range(count):
        taskinfo = struct_pb2.Struct()
        taskinfo.update(_taskinfo(i))
        request = pb.AskRequest(tasktype="uri://docker-container", taskinfo=taskinfo)
        if i % 4 == 0:
            request.resources.cores.min = 1 + i % 8
            request.resources.memory.max = 2**30 * (1 + i % 16)
        decoded = decode(request.SerializeToString())
        assert isinstance(decoded, pb.AskRequest)
        requests.append(decoded)
    services = [
        {
            "servicetype": f"uri://docker-uws-{n}",
            "serviceinfo": {"endpoint": f"https://uws{n}.example.org/dkuws", "queue": "short"},
        }
        for n in range(3)
    ]
    sites = {
        "answer": Site.resolve(DockerConfig(), host),
        "answer-3": Site.resolve(DockerConfig.model_validate({"services": services}), host),
    }
    queries = [wire.query_from_request(r, limits) for r in requests]
    answers: dict[str, list[Any]] = {}
    for name, site in sites.items():
        answers[name] = []
        for query in queries:
            verdict = decide(query, site)
            assert verdict.offers, verdict.reasons
            offers = [("docker", o) for o in verdict.offers]
            answers[name].append(Answer(offers, ()))

    def query_round() -> float:
        start = time.perf_counter_ns()
        for request in requests:
            wire.query_from_request(request, limits)
        return (time.perf_counter_ns() - start) / count / 1000

    def answer_round(items: list[Any]) -> float:
        start = time.perf_counter_ns()
        for answer in items:
            wire.answer_to_proto(answer)
        return (time.perf_counter_ns() - start) / count / 1000

    # One round of each per line read, until stdin closes.
    for _ in sys.stdin:
        result = {"query": query_round()}
        for name, items in answers.items():
            result[name] = answer_round(items)
        print(json.dumps(result), flush=True)


def _start(tree: Path, count: int) -> subprocess.Popen[str]:
    """A process measuring ``tree``'s code, a round per line it reads."""
    code = (
        "import sys;"
        f"sys.path[:0] = [{str(tree)!r}, {str(tree / PLUGIN)!r}];"
        "import ep_server, ep_plugin_docker;"
        f"assert ep_server.__file__.startswith({str(tree)!r}), ep_server.__file__;"
        f"assert ep_plugin_docker.__file__.startswith({str(tree)!r}), ep_plugin_docker.__file__;"
        "import importlib.util;"
        f"spec = importlib.util.spec_from_file_location('micro_wire', {__file__!r});"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module);"
        f"module._serve({count})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def _round(process: subprocess.Popen[str]) -> dict[str, float]:
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write("round\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the measuring process ended (exit status {process.wait()})")
    result: dict[str, float] = json.loads(line)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="another tree to measure alongside")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    trees = {"this": HERE}
    if args.baseline:
        trees = {"baseline": args.baseline.resolve(), **trees}
    processes = {name: _start(tree, args.requests) for name, tree in trees.items()}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, process in processes.items():
                rounds[name].append(_round(process))
    finally:
        for process in processes.values():
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=60)
    print(f"µs per call: median (and lowest) of {args.rounds} interleaved rounds x {args.requests}")
    print(f"{'tree':10}" + "".join(f"{k:>18}" for k in rounds["this"][0]))
    for name, results in rounds.items():
        cells = (
            f"{statistics.median(r[k] for r in results):8.2f} ({min(r[k] for r in results):6.2f})"
            for k in results[0]
        )
        print(f"{name:10}" + "".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
