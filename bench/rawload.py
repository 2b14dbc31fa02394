"""A low-CPU gRPC load generator over raw HTTP/2, run as its own process.

``N`` concurrent ``Ask`` streams on one TCP connection for a bounded time
and count, the requests taken round-robin from a file of distinct gRPC
messages (bench/asks.py), starting at ``--start``; it prints the run as
JSON. A grpc.aio client costs about 300 µs of CPU per call on a 2-core
machine, where it competes with the server; h2load is cheap but sends one
body. This sends each call as two pre-built frames (HEADERS, then DATA with
END_STREAM) over a plain socket: the request headers are HPACK-encoded
once (the second encoding, all indexed, is sent on every stream), so the
only per-call work is two 9-byte frame headers. What comes back is read
frame by frame: the server's header blocks are decoded with ``hpack`` (the
HPACK part of the Python ``h2`` project), PING and SETTINGS acknowledged,
flow control kept on both sides.

Every call is checked: response headers with ``:status`` 200, one
uncompressed message that decodes as an ``AskResponse`` saying YES with
``--offers`` offers, and trailers with ``grpc-status`` 0. Any other
outcome is counted under ``errors`` (by gRPC status name, or what went
wrong), never as a call. The generator's own CPU per call
(``time.process_time`` over the loop) is in the result.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Final, TypedDict

import grpc
from hpack import Decoder, Encoder

from bench.asks import read_framed
from bench.harness import ASK_METHOD, percentile
from ep_server.pb import execution_planner_pb2 as pb

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 4, 5
SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 2, 3
#: What this client lets the server send before a WINDOW_UPDATE.
WINDOW: Final = 1 << 30
#: gRPC status codes by number, for the error counts.
STATUS_NAMES: Final = tuple(code.name for code in sorted(grpc.StatusCode, key=lambda c: c.value[0]))


class RawLoadResult(TypedDict):
    """What one run prints, as a JSON object."""

    calls: int  # calls answered as expected
    errors: dict[str, int]  # what went wrong -> count
    seconds: float
    qps: float
    p50_ms: float | None  # None when no call succeeded
    p99_ms: float | None
    #: This process's CPU (user + system) over the run, per call sent.
    cpu_us: float
    #: Where the next run should start in the request file.
    next: int


class LoadError(Exception):
    """The connection failed or the server broke the protocol."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream)
        + payload
    )


def request_headers(authority: str) -> tuple[bytes, bytes]:
    """The first HEADERS block (which fills the server's HPACK table) and
    the one for every later stream (indexed, the same bytes each time)."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", ASK_METHOD),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "10S"),
        ("user-agent", "ep-bench-rawload"),
    ]
    encoder = Encoder()
    first, later = encoder.encode(headers), encoder.encode(headers)
    if encoder.encode(headers) != later:
        raise LoadError("the HPACK encoding of the request headers does not settle")
    return first, later


class _Stream:
    __slots__ = ("body", "headers", "started")

    def __init__(self, started: int) -> None:
        self.started = started
        self.headers = False
        self.body = b""


def run(
    target: str,
    messages: list[bytes],
    start: int,
    concurrency: int,
    seconds: float,
    max_calls: int,
    offers: int,
) -> RawLoadResult:
    """Load ``target`` with ``messages`` (each gRPC-framed), from ``start``
    on, round-robin."""
    host, _, port = target.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    first_block, block = request_headers(target)
    decoder = Decoder()
    settings = struct.pack(">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, WINDOW)
    sock.sendall(
        PREFACE
        + frame(SETTINGS, 0, 0, settings)
        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW))
    )
    # The server's limits, until its SETTINGS say otherwise (RFC 9113 defaults).
    send_window, stream_window, max_frame = 65535, 65535, 16384
    received = 0  # DATA bytes received since the last WINDOW_UPDATE sent
    streams: dict[int, _Stream] = {}
    latencies: list[int] = []
    errors: dict[str, int] = {}
    next_id, sent, at = 1, 0, start % len(messages)
    answer_of = pb.AskResponse.FromString
    yes = pb.YES
    now = time.perf_counter_ns
    cpu0 = time.process_time()
    started = now()
    stop_at = started + int(seconds * 1e9)
    out: list[bytes] = []
    buf = bytearray()
    pending_headers: dict[int, bytearray] = {}

    def fail(what: str) -> None:
        errors[what] = errors.get(what, 0) + 1

    def issue() -> None:
        nonlocal next_id, sent, at, send_window, first_block
        while len(streams) < concurrency and sent < max_calls and now() < stop_at:
            message = messages[at]
            if len(message) > send_window:
                return  # wait for the server's WINDOW_UPDATE
            if len(message) > min(stream_window, max_frame):
                raise LoadError(
                    f"a {len(message)}-byte request exceeds the server's window or frame size"
                )
            sid = next_id
            next_id += 2
            at = (at + 1) % len(messages)
            send_window -= len(message)
            out.append(frame(HEADERS, END_HEADERS, sid, first_block or block))
            first_block = b""
            out.append(frame(DATA, END_STREAM, sid, message))
            streams[sid] = _Stream(now())
            sent += 1

    def finish(sid: int, trailers: list[tuple[bytes, bytes]]) -> None:
        stream = streams.pop(sid)
        status = dict(trailers).get(b"grpc-status")
        if status != b"0":
            code = int(status) if status and status.isdigit() else -1
            fail(STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"grpc-status {status!r}")
            return
        body = stream.body
        if not stream.headers or len(body) < 5 or body[0] != 0:
            fail("no answer message")
            return
        if len(body) != 5 + int.from_bytes(body[1:5], "big"):
            fail("not one answer message")
            return
        answer = answer_of(body[5:])
        if answer.responseword != yes or len(answer.offers) != offers:
            fail("wrong answer")
            return
        latencies.append(now() - stream.started)

    def on_headers(sid: int, flags: int, block_bytes: bytes) -> None:
        fields = [(bytes(k), bytes(v)) for k, v in decoder.decode(block_bytes, raw=True)]
        stream = streams.get(sid)
        if stream is None:
            return
        if flags & END_STREAM:
            finish(sid, fields)
        elif (b":status", b"200") in fields:
            stream.headers = True
        else:
            streams.pop(sid)
            fail(f"HTTP status {dict(fields).get(b':status')!r}")

    try:
        issue()
        while streams or (sent < max_calls and now() < stop_at):
            if out:
                sock.sendall(b"".join(out))
                out.clear()
            chunk = sock.recv(1 << 18)
            if not chunk:
                raise LoadError("the server closed the connection")
            buf += chunk
            pos, end = 0, len(buf)
            while end - pos >= 9:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                if end - pos - 9 < length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                if kind == DATA:
                    received += length
                    if flags & PADDED:
                        payload = payload[1 : len(payload) - payload[0]]
                    stream = streams.get(sid)
                    if stream is not None:
                        stream.body += payload
                        if flags & END_STREAM:
                            streams.pop(sid)
                            fail("no trailers")
                elif kind == HEADERS:
                    if flags & PADDED:
                        payload = payload[1 : len(payload) - payload[0]]
                    if flags & PRIORITY:
                        payload = payload[5:]
                    if flags & END_HEADERS:
                        on_headers(sid, flags, payload)
                    else:
                        pending_headers[sid] = bytearray(payload)
                        pending_headers[sid].append(flags)  # kept at the end
                elif kind == CONTINUATION:
                    held = pending_headers[sid]
                    first_flags = held.pop()
                    held += payload
                    if flags & END_HEADERS:
                        del pending_headers[sid]
                        on_headers(sid, first_flags, bytes(held))
                    else:
                        held.append(first_flags)
                elif kind == WINDOW_UPDATE:
                    if sid == 0:
                        send_window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                elif kind == PING:
                    if not flags & ACK:
                        out.append(frame(PING, ACK, 0, payload))
                elif kind == SETTINGS:
                    if not flags & ACK:
                        for i in range(0, len(payload) - 5, 6):
                            key, value = struct.unpack(">HI", payload[i : i + 6])
                            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                                stream_window = value
                            elif key == SETTINGS_MAX_FRAME_SIZE:
                                max_frame = value
                            elif key == SETTINGS_MAX_CONCURRENT_STREAMS and value < concurrency:
                                raise LoadError(f"the server allows {value} streams at once")
                        out.append(frame(SETTINGS, ACK, 0))
                elif kind == RST_STREAM:
                    if streams.pop(sid, None) is not None:
                        fail(f"RST_STREAM {int.from_bytes(payload[:4], 'big')}")
                elif kind == GOAWAY:
                    code = int.from_bytes(payload[4:8], "big")
                    raise LoadError(f"the server sent GOAWAY {code}: {payload[8:]!r}")
            del buf[:pos]
            if received > WINDOW // 2:
                out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", received)))
                received = 0
            issue()
    finally:
        sock.close()
    elapsed_ns = now() - started
    cpu = time.process_time() - cpu0
    n = len(latencies)
    ms = [x / 1e6 for x in latencies]
    return {
        "calls": n,
        "errors": errors,
        "seconds": elapsed_ns / 1e9,
        "qps": n / (elapsed_ns / 1e9),
        "p50_ms": percentile(ms, 0.5) if n else None,
        "p99_ms": percentile(ms, 0.99) if n else None,
        "cpu_us": 1e6 * cpu / max(sent, 1),
        "next": at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--requests", type=Path, required=True, help="gRPC-framed requests")
    parser.add_argument("--start", type=int, default=0, help="the first request's index")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-calls", type=int, default=100_000)
    parser.add_argument("--offers", type=int, required=True, help="offers in every answer")
    args = parser.parse_args()
    messages = list(read_framed(args.requests))
    try:
        result = run(
            args.target, messages, args.start, args.concurrency, args.seconds,
            args.max_calls, args.offers,
        )  # fmt: skip
    except (OSError, LoadError) as exc:
        sys.exit(f"bench.rawload: {exc}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
