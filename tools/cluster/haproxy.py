"""HAProxy in front of the replicas: a gRPC balancer that spreads calls.

Both sides speak HTTP/2 (``mode http``, ``proto h2`` on the frontend's bind
and on every server), so HAProxy sees each gRPC call as one request and
sends it to the next replica (``balance roundrobin``), whatever connection
it came on; a client with one connection reaches every replica.

Health checks ask each replica's own ``grpc.health.v1.Health/Check`` for
the EP service. HAProxy 2.6 (Debian 12's) has no gRPC check, and its HTTP
check cannot send the request: a gRPC message starts with a zero byte,
which neither ``http-check send body`` nor ``body-lf`` can hold. So the
check is a ``tcp-check`` that sends a complete HTTP/2 request, written out
here byte by byte (:func:`health_request`), and reads the answer: it waits
for the end of the response (the trailers' HEADERS frame with END_STREAM on
stream 1) and then wants the message that says SERVING. A check of a
replica that answers NOT_SERVING (stopping, or its ledger unreachable) or
anything else fails as soon as the answer is in, not after a timeout; two
such checks in a row (one a second) take the replica out.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tools.cluster.processes import ClusterError, run, signals_deferred

__all__ = [
    "SERVICE",
    "SERVING_MESSAGE",
    "TRAILERS",
    "config",
    "ensure_haproxy",
    "health_request",
    "server_states",
    "version",
]

#: The service whose health the balancer checks (ep_server.servicer's name).
SERVICE = "ivoa.ep.v1.ExecutionPlannerService"
#: HTTP/2 frame type, flags and stream id of the response's last HEADERS
#: frame: END_STREAM | END_HEADERS on stream 1. It ends every answer.
TRAILERS = bytes([0x01, 0x05, 0, 0, 0, 1])
#: The gRPC message HealthCheckResponse{status: SERVING}: not compressed,
#: 2 bytes long, field 1 (varint) = 1.
SERVING_MESSAGE = bytes([0, 0, 0, 0, 2, 0x08, 0x01])

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _SETTINGS = 0x0, 0x1, 0x4
_END_STREAM, _END_HEADERS = 0x1, 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    length = struct.pack(">I", len(payload))[1:]
    return length + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _header(index: int, value: bytes) -> bytes:
    """HPACK: a literal header field without indexing, whose name is entry
    ``index`` of the static table, with a plain (not Huffman) value."""
    name = bytes([index]) if index < 15 else bytes([0x0F, index - 15])
    return name + bytes([len(value)]) + value


def health_request(service: str = SERVICE) -> bytes:
    """What a gRPC client sends on a new plaintext HTTP/2 connection to ask
    ``Health/Check`` for ``service``: the preface, empty SETTINGS, the
    request's HEADERS and its one DATA frame."""
    headers = b"".join(
        [
            b"\x83",  # :method POST (static table entry 3)
            b"\x86",  # :scheme http (entry 6)
            _header(4, b"/grpc.health.v1.Health/Check"),  # :path
            _header(1, b"haproxy-check"),  # :authority
            _header(31, b"application/grpc"),  # content-type
            b"\x00\x02te\x08trailers",  # te: trailers (a name not in the table)
        ]
    )
    name = service.encode()
    message = b"\x0a" + bytes([len(name)]) + name  # field 1, a string
    body = b"\x00" + struct.pack(">I", len(message)) + message
    return b"".join(
        [
            _PREFACE,
            _frame(_SETTINGS, 0, 0, b""),
            _frame(_HEADERS, _END_HEADERS, 1, headers),
            _frame(_DATA, _END_STREAM, 1, body),
        ]
    )


def config(
    bind: str,
    servers: Sequence[tuple[str, str]],
    stats_socket: str,
    *,
    check_interval: str = "1s",
) -> str:
    """The HAProxy configuration: a frontend on ``bind`` (``HOST:PORT``), a
    backend with one server per ``(name, HOST:PORT)`` replica, and the
    stats socket (``show stat``) at ``stats_socket``, a path (relative to
    HAProxy's working directory, or absolute)."""
    lines = "\n".join(f"    server {name} {address} proto h2 check" for name, address in servers)
    return f"""\
global
    log stderr format raw local0 info
    stats socket unix@{stats_socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout check 2s

frontend grpc
    # HTTP/2 without TLS (h2c, prior knowledge), as gRPC clients speak it.
    bind {bind} proto h2
    default_backend replicas

backend replicas
    balance roundrobin
    # grpc.health.v1.Health/Check for {SERVICE}, in HTTP/2 written out.
    option tcp-check
    tcp-check connect
    tcp-check send-binary {health_request().hex()} comment "Health/Check"
    tcp-check expect binary {TRAILERS.hex()} comment "the end of the answer"
    tcp-check expect min-recv 1 binary {SERVING_MESSAGE.hex()} comment "SERVING"
    # Out after two failed checks in a row, back after two good ones.
    default-server inter {check_interval} fall 2 rise 2
{lines}
"""


def _binary() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None


def ensure_haproxy(log: Path) -> str:
    """The haproxy program, installed with apt-get when it is missing
    (``apt-get update`` first when the package is not found). Ctrl-C waits
    for apt-get to finish: a package manager cut short can leave the
    package database half changed.

    :raises ClusterError: when it cannot be installed, saying why.
    """
    found = _binary()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterError(
            "haproxy is not installed, and it can be installed here only by root with apt-get: "
            "sudo apt-get install haproxy"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "haproxy"]
    print(f"ep-cluster: installing haproxy with apt-get; log {log}", flush=True)
    with signals_deferred("ep-cluster: stopping once apt-get has finished"):
        try:
            run(install, log, timeout=600, env=env)
        except ClusterError:
            run(["apt-get", "update"], log, timeout=600, env=env)
            run(install, log, timeout=600, env=env)
    found = _binary()
    if not found:
        raise ClusterError(
            f"apt-get installed haproxy, but no haproxy program was found; log {log}"
        )
    return found


def version(binary: str) -> str:
    """HAProxy's version, such as ``2.6.12-1+deb12u4``."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"version (\S+)", out)
    return match[1] if match else "unknown"


def server_states(stats_socket: Path) -> dict[str, tuple[str, str]]:
    """Each backend server's state and last check, from the stats socket:
    ``{"replica-1": ("UP", "L7OK"), ...}``."""
    deadline = time.monotonic() + 5
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(stats_socket))
        sock.sendall(b"show stat\n")
        chunks = []
        for _ in range(1000):  # a few KiB; HAProxy closes the socket after one command
            chunk = sock.recv(65536)
            if not chunk or time.monotonic() > deadline:
                break
            chunks.append(chunk)
    lines = b"".join(chunks).decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    columns = lines[0][2:].split(",")
    rows = (dict(zip(columns, line.split(","), strict=False)) for line in lines[1:] if line)
    return {
        row["svname"]: (row["status"], row["check_status"])
        for row in rows
        if row.get("pxname") == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
    }
