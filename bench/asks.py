"""Asks that vary, for measuring what an Ask costs (bench/cost.py, bench/pieces.py).

Every request of a set is distinct: image references (registry, namespace,
name, tag, digest), taskinfo keys and values and the resources asked for all
change with the request's number, so that no memo of parsed references or
``lru_cache`` in the path can stand in for the work when the set is sent
round-robin. Every request is one its server must answer YES:

- ``docker``: ``uri://docker-container`` as the default config claims it
  (ep-plugin-docker): the IVOA note's plain ``image`` string, the
  ExecutionBroker's image object with locations, digest and platform,
  ports, environment, entrypoint; one offer (the plugin's default service);
- ``synthetic``: ``uri://bench-task`` for the 20 synthetic plugins
  (tests/fake_plugins/synthetic.py), four of which claim it: four offers;
- ``jupyter``: ``uri://jupyter-notebook`` with notebook URLs, for
  ep-plugin-jupyter configured with ``kernels = ["python"]``: one offer.

A set is written for the load generator as gRPC length-prefixed messages,
back to back (:func:`write_framed`).
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ep_server.pb import execution_planner_pb2 as pb

__all__ = ["KINDS", "OFFERS", "TASKTYPES", "framed", "read_framed", "requests", "write_framed"]

TASKTYPES: Final = {
    "docker": "uri://docker-container",
    "synthetic": "uri://bench-task",
    "jupyter": "uri://jupyter-notebook",
}
KINDS: Final = tuple(TASKTYPES)
#: The offers in the answer to every request of a kind (its servers' configs).
OFFERS: Final = {"docker": 1, "synthetic": 4, "jupyter": 1}
#: The taskinfo platform this host runs (omitted on other architectures).
_PLATFORM: Final = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(platform.machine())
MiB: Final = 1024 * 1024


def _digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()


def docker_taskinfo(i: int) -> dict[str, Any]:
    """A docker-container taskinfo, one of four shapes, all distinct by ``i``."""
    shape = i % 4
    if shape == 0:
        return {
            "image": f"registry{i % 97}.example.org/ns{i % 13}/name-{i}:tag-{i % 31}",
            "environment": {f"VAR_{i % 7}": f"value-{i}"},
        }
    if shape == 1:
        return {
            "image": f"docker.io/ns{i % 11}/name-{i}@{_digest(i)}",
            "ports": [
                {
                    "internal": {"port": 8000 + i % 1000},
                    "external": {"port": 20000 + i % 40000},
                    "protocol": "TCP",
                }
            ],
        }
    if shape == 2:
        image: dict[str, Any] = {
            "locations": [f"ghcr.io/org-{i % 17}/tool-{i}:v{i % 9}.{i % 5}"],
            "digest": _digest(i),
        }
        if _PLATFORM:
            image["platform"] = _PLATFORM
        return {"image": image, "entrypoint": ["run", f"--n={i}"]}
    info: dict[str, Any] = {
        "image": f"name-{i}:{i % 50}",
        "network": {"ports": [{"internal": 8080 + i % 7, "protocol": "tcp"}]},
        "environment": [f"A{i % 5}=x{i}"],
    }
    if _PLATFORM:
        info["platform"] = _PLATFORM
    return info


def synthetic_taskinfo(i: int) -> dict[str, Any]:
    return {
        "image": f"registry{i % 97}.example.org/ns{i % 13}/name-{i}:tag-{i % 31}",
        f"key{i % 10}": f"value-{i}",
        "n": i,
    }


def jupyter_taskinfo(i: int) -> dict[str, Any]:
    return {
        "notebook": f"https://nb{i % 50}.example.org/u{i % 300}/analysis-{i}.ipynb",
        "kernel": "python",
        "requirements": f"requirements-{i % 10}.txt",
    }


_TASKINFO = {
    "docker": docker_taskinfo,
    "synthetic": synthetic_taskinfo,
    "jupyter": jupyter_taskinfo,
}


def request(kind: str, i: int) -> pb.AskRequest:
    """The ``i``-th request of ``kind``: at most 2 cores (a host of this
    bench has at least 2) and a little memory, varying."""
    message = pb.AskRequest(tasktype=TASKTYPES[kind])
    message.taskinfo.update(_TASKINFO[kind](i))
    message.resources.cores.min = 1 + i % 2
    message.resources.cores.max = 2
    message.resources.memory.min = (64 + i % 512) * MiB
    return message


def requests(kind: str, n: int) -> list[bytes]:
    """``n`` distinct serialized requests of ``kind``."""
    return [request(kind, i).SerializeToString() for i in range(n)]


def framed(message: bytes) -> bytes:
    """``message`` as a gRPC length-prefixed message (uncompressed)."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def write_framed(path: Path, messages: list[bytes]) -> None:
    path.write_bytes(b"".join(framed(m) for m in messages))


def read_framed(path: Path) -> Iterator[bytes]:
    """The gRPC messages of ``path`` as written by :func:`write_framed`,
    each still framed."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        end = pos + 5 + int.from_bytes(data[pos + 1 : pos + 5], "big")
        yield data[pos:end]
        pos = end
