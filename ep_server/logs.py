"""Logging: plain text for people, JSON lines for log pipelines, and the
request id on every line logged while an RPC is handled.

The request id comes from the caller's ``x-request-id`` metadata when it
sends a sane one, else it is made up; the caller gets it back in the
``x-request-id`` trailing metadata either way, so a client can quote it and
an operator can find every line about that call.
"""

from __future__ import annotations

import atexit
import faulthandler
import json
import logging
import os
import re
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, BinaryIO

__all__ = [
    "REQUEST_ID",
    "WORKER_ENV",
    "JsonFormatter",
    "RequestIdFilter",
    "WorkerFilter",
    "route_grpc_core_logs",
    "setup_logging",
]

#: The id of the RPC being handled in this task ("" outside RPCs).
REQUEST_ID: ContextVar[str] = ContextVar("ep_request_id", default="")

_TEXT = "%(asctime)s %(levelname)s %(worker_tag)s%(name)s%(request_tag)s: %(message)s"
#: Set by ``--workers N`` in each worker's environment: its number, 1 to N.
WORKER_ENV = "EP_WORKER_NUMBER"
# Attributes every LogRecord has; anything else was passed in ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "request_tag",
    "worker_tag",
}


class RequestIdFilter(logging.Filter):
    """Put the current request id on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class WorkerFilter(logging.Filter):
    """Put the worker's number and pid on each record (``--workers N``):
    ``worker`` and ``pid`` in JSON, ``[worker 2 pid 4711]`` in text. Outside
    a worker the text tag is empty and JSON has no ``worker``."""

    def __init__(self, worker: str | None) -> None:
        super().__init__()
        self.worker = int(worker) if worker and worker.isdigit() else None
        self.tag = f"[worker {self.worker} pid {os.getpid()}] " if self.worker else ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_tag = self.tag
        if self.worker is not None:
            record.worker = self.worker
            record.pid = record.process
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id,
    any ``extra=`` fields, and the exception if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once: one stderr handler, UTC times."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(WorkerFilter(os.environ.get(WORKER_ENV)))
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# A line of gRPC's C core (absl format): severity, MMDD, time, thread id,
# file:line, then the message.
_CORE_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")
_CORE_LEVELS = {
    b"I": logging.INFO,
    b"W": logging.WARNING,
    b"E": logging.ERROR,
    b"F": logging.CRITICAL,
}
_routed = False


def route_grpc_core_logs() -> None:
    """Send the log lines of gRPC's C core through :mod:`logging`.

    The C core writes straight to file descriptor 2, bypassing Python, so its
    lines ("Handshake failed", "add_port.cc") would break a JSON log and
    reach a client's terminal. From now on file descriptor 2 is a pipe that a
    thread reads: a C-core line becomes a record of the ``grpc`` logger at
    its own level, with its source file as ``grpc_source``; anything else is
    passed on unchanged. ``sys.stderr`` is the real standard error. Call it
    once, first thing in a command, never in a library or under pytest (both
    own standard error). ``GRPC_VERBOSITY`` still chooses what the C core
    writes at all.
    """
    global _routed
    if _routed:
        return
    _routed = True
    try:
        real = os.dup(2)
    except OSError:  # standard error is closed (2>&-): nothing to keep clean
        return
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = open(real, "w", buffering=1, errors="backslashreplace")  # noqa: SIM115
    if faulthandler.is_enabled():  # a crash's traceback goes to the real one
        faulthandler.enable(sys.stderr)
    # At exit, standard error is itself again, so that whatever is written
    # last (a fatal error's message) is not lost in the pipe.
    atexit.register(os.dup2, real, 2)
    reader = threading.Thread(
        target=_pump, args=(os.fdopen(read, "rb"),), name="grpc-core-log", daemon=True
    )
    reader.start()


def _pump(pipe: BinaryIO) -> None:
    log = logging.getLogger("grpc")
    for line in pipe:
        try:
            match = _CORE_LINE.match(line.rstrip(b"\n"))
            if match is None:
                sys.stderr.write(line.decode(errors="backslashreplace"))
                continue
            severity, source, message = match.groups()
            log.log(
                _CORE_LEVELS[severity],
                "%s",
                message.decode(errors="backslashreplace"),
                extra={"grpc_source": source.decode(errors="backslashreplace")},
            )
        except Exception:  # the pipe must keep draining, or writers to fd 2 block
            continue
