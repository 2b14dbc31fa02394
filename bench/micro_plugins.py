"""In-process cost of the docker and jupyter plugins' ``decide()``, per Ask.

Run: ``.venv/bin/python -m bench.micro_plugins --baseline DIR`` (``--help``
for the knobs), where DIR is another checkout of this repository (for
example an unmodified copy of main) to compare against.

Each code tree is measured in a subprocess of its own, with that tree's
plugin directories and root first on ``sys.path``; rounds alternate between
the trees so that machine drift falls on both, and the report gives the
median of the rounds. A round times ``decide(query, site)`` over a list of
distinct queries built from a fixed seed (image references with and without
registries, ports, tags, digests and platforms; notebook URLs, objects and
local paths), each query asked once per pass, so that no cache on the way
(``urllib.parse.urlsplit`` keeps 128 entries) can stand in for the work.

Scenarios:

  docker-yes    valid taskinfos of every form the plugin reads: all YES
  docker-mixed  one in five malformed or refused (bad references, digests,
                privileged, ports outside the allowed ones): YES and NO
  jupyter-yes   notebook URLs, in each of the three forms, with kernels and
                requirements: all YES
  jupyter-mixed one in five refused (a path outside the roots, a bad scheme,
                a missing kernel), and one in ten a notebook file under a root
                (which reads the filesystem)

The figures are microseconds of CPU-bound Python on an idle core; inside
the server the same code costs more (grpc's own work evicts caches).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = 16
GiB = 1024**3
SCENARIOS = ("docker-yes", "docker-mixed", "jupyter-yes", "jupyter-mixed")


# --- the requests --------------------------------------------------------------


def _digest(n: int, algorithm: str = "sha256") -> str:
    return f"{algorithm}:" + hashlib.new(algorithm, str(n).encode()).hexdigest()


_REGISTRIES = (
    "",
    "",
    "docker.io/",
    "ghcr.io/",
    "registry.example.org:5000/",
    "localhost:5000/",
    "localhost/",
    "[::1]:5000/",
    "Quay.IO/",
    "127.0.0.1:443/",
)
_SEPARATORS = ("-", "_", ".", "__", "--")


def image_reference(rng: random.Random, n: int) -> str:
    """A valid image reference, distinct for each ``n``."""
    registry = rng.choice(_REGISTRIES)
    parts = [f"team{rng.randrange(50)}"] if rng.random() < 0.6 else []
    parts.append(f"img{rng.choice(_SEPARATORS)}{n}")
    if rng.random() < 0.2:
        parts.append("sub")
    name = registry + "/".join(parts)
    tag = rng.choice(("", ":latest", f":v{n % 97}.{n % 13}", ":Tag_UP-1.2", ":22.04"))
    digest = f"@{_digest(n)}" if rng.random() < 0.3 else ""
    return name + tag + digest


def _bad_reference(rng: random.Random, n: int) -> str:
    return rng.choice(
        (
            f"Img{n}",
            f"docker.io/Img{n}:1.0",
            f"img{n}:-tag",
            f"img{n}@sha256:{n:x}",
            f"bad_host{n}.example.com/img",
            f"img{n}@md5:" + "a" * 32,
            f"img{n}:1.0:2.0",
            f"foo//bar{n}",
        )
    )


def _platform(rng: random.Random) -> Any:
    return rng.choice(
        (
            None,
            "linux/amd64",
            "linux",
            "LINUX/X86_64",
            {"os": "linux", "architecture": "x86_64"},
            {"architecture": "amd64"},
        )
    )


def docker_taskinfo(rng: random.Random, n: int, bad: bool = False) -> dict[str, Any]:
    """A docker-container taskinfo; with ``bad``, one the plugin refuses."""
    if bad and rng.random() < 0.6:
        return {"image": _bad_reference(rng, n)}
    taskinfo: dict[str, Any] = {}
    if rng.random() < 0.25:
        digest = _digest(n)
        taskinfo["image"] = {
            "locations": [image_reference(rng, n), f"ghcr.io/mirror/img{n}"],
            "digest": digest,
        }
        platform = _platform(rng)
        if platform is not None:
            taskinfo["image"]["platform"] = platform
    else:
        taskinfo["image"] = image_reference(rng, n)
        platform = _platform(rng)
        if platform is not None:
            taskinfo["platform"] = platform
    if rng.random() < 0.3:
        external = 1024 + n % 60000
        taskinfo["ports"] = [
            {"internal": {"port": 8080}, "external": {"port": external}, "protocol": "TCP"}
        ]
    if rng.random() < 0.2:
        taskinfo["network"] = {"mode": "bridge", "ports": [{"internal": 80, "protocol": "http"}]}
    if rng.random() < 0.3:
        taskinfo["environment"] = {"RUN": str(n)} if n % 2 else [f"RUN={n}"]
    if rng.random() < 0.2:
        taskinfo["entrypoint"] = ["run", str(n)] if n % 2 else "run.sh"
    if rng.random() < 0.05:
        taskinfo["privilaged"] = False  # misspelt: YES, with a note
    if bad:
        taskinfo[rng.choice(("privileged", "ports"))] = (
            True if rng.random() < 0.5 else [{"external": 80, "protocol": "sctp"}]
        )
    return taskinfo


def jupyter_taskinfo(rng: random.Random, n: int, root: str, bad: bool = False) -> dict[str, Any]:
    """A notebook taskinfo, with a URL, a notebook under ``root`` or (``bad``) a refusal."""
    host = f"host{n % 500}.example.org" if n % 3 else f"Nb-{n}.Example.ORG:8443"
    location = f"https://{host}/path/{n}/nb{n}.ipynb"
    if n % 7 == 0:
        location = f"http://user@{host}/nb{n}.ipynb?rev={n}#cell"
    if bad:
        location = rng.choice(
            (f"/srv/elsewhere/nb{n}.ipynb", f"ftp://x/nb{n}.ipynb", f"nb{n}.ipynb")
        )
    elif rng.random() < 0.1:
        location = f"{root}/nb{n % 20}.ipynb"
    kernel: dict[str, Any] = {}
    choice = rng.random()
    if choice < 0.3:
        kernel["kernel"] = "python3" if n % 2 else "Python"
    elif choice < 0.5:
        kernel["languages"] = ["python", "R"]
    if bad and rng.random() < 0.3:
        kernel["kernel"] = "julia"
    if rng.random() < 0.2:
        kernel["requirements"] = f"requirements-{n}.txt" if n % 2 else f"https://x.org/r{n}.txt"
    form = n % 3
    if form == 0:
        return {"notebook": location, **kernel}
    if form == 1:
        return {"notebook": {"location": location, **kernel}}
    return {"location": location, **kernel}


# --- one measurement (in the child) ------------------------------------------------


def _resources(rng: random.Random, ep: Any) -> Any:
    if rng.random() < 0.5:
        return ep.Resources()
    cores = ep.IntRange(rng.choice((None, 1, 2)), rng.choice((None, 2, 4, 64)))
    memory = ep.IntRange(None, rng.choice((None, GiB, 64 * GiB)))
    return ep.Resources(cores, memory)


def _time_per_call(
    decide: Callable[[Any, Any], Any], queries: Sequence[Any], site: Any, passes: int
) -> float:
    """CPU microseconds per call (this process's CPU time, so that time spent
    waiting for a core is not counted), the fastest of ``passes`` passes over
    ``queries``."""
    best = float("inf")
    for _ in range(passes):
        start = time.process_time_ns()
        for query in queries:
            decide(query, site)
        best = min(best, (time.process_time_ns() - start) / len(queries) / 1000)
    return best


def child(tree: Path, asks: int, passes: int) -> dict[str, float]:
    """Import ``tree``'s plugins and time each scenario."""
    plugins = tree / "plugins"
    sys.path[:0] = [str(plugins / name) for name in ("ep-plugin-docker", "ep-plugin-jupyter")]
    sys.path.insert(2, str(tree))
    # imported by name, from whichever tree is first on the path
    docker = importlib.import_module("ep_plugin_docker.decide")
    docker_hooks = importlib.import_module("ep_plugin_docker.hooks")
    jupyter = importlib.import_module("ep_plugin_jupyter.decide")
    jupyter_hooks = importlib.import_module("ep_plugin_jupyter.hooks")
    ep = importlib.import_module("ep_server")

    for module in (docker, jupyter, ep):
        assert Path(str(module.__file__)).is_relative_to(tree), module.__file__
    host = ep.HostInfo(cores=8, memory=16 * GiB, architecture="x86_64", os="linux")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        for i in range(20):
            Path(root, f"nb{i}.ipynb").write_text("{}")
        docker_site = docker_hooks.ep_configure({}, host)
        jupyter_site = jupyter_hooks.ep_configure(
            {"notebook_roots": [root], "kernels": ["python", "python3", "r"]}, host
        )
        for scenario in SCENARIOS:
            rng = random.Random(f"{SEED}-{scenario}")
            mixed = scenario.endswith("mixed")
            queries = []
            for n in range(asks):
                bad = mixed and n % 5 == 0
                if scenario.startswith("docker"):
                    tasktype, taskinfo = docker.TASKTYPES[0], docker_taskinfo(rng, n, bad)
                else:
                    tasktype, taskinfo = jupyter.TASKTYPES[0], jupyter_taskinfo(rng, n, root, bad)
                queries.append(ep.TaskQuery(tasktype, taskinfo, _resources(rng, ep)))
            if scenario.startswith("docker"):
                results[scenario] = _time_per_call(docker.decide, queries, docker_site, passes)
            else:
                results[scenario] = _time_per_call(jupyter.decide, queries, jupyter_site, passes)
    return results


# --- the comparison (in the parent) -------------------------------------------------


def _run_child(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.micro_plugins", "--child", str(tree)]
    command += ["--asks", str(args.asks), "--passes", str(args.passes)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        command, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to compare against")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per tree (default 5)")
    parser.add_argument("--asks", type=int, default=20_000, help="distinct queries per scenario")
    parser.add_argument("--passes", type=int, default=3, help="passes per round (the fastest)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50 or not 100 <= args.asks <= 200_000 or not 1 <= args.passes <= 10:
        parser.error("--rounds 1-50, --asks 100-200000, --passes 1-10")
    if args.child is not None:
        print(json.dumps(child(args.child.resolve(), args.asks, args.passes)))
        return 0
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve(), **trees}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rounds[name].append(_run_child(tree, args))
    print(f"decide() per Ask, us: median of {args.rounds} rounds, {args.asks} distinct queries")
    header = f"{'scenario':<15}" + "".join(f"{name:>12}" for name in trees)
    print(header + ("       ratio" if len(trees) == 2 else ""))
    for scenario in SCENARIOS:
        medians = [statistics.median(r[scenario] for r in rounds[name]) for name in trees]
        line = f"{scenario:<15}" + "".join(f"{m:>12.2f}" for m in medians)
        if len(medians) == 2:
            line += f"{medians[1] / medians[0]:>12.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
