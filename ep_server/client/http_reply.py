"""What an HTTP reply to ``POST {url}accept`` means: an :class:`Answer` or a :class:`Failure`.

* 2xx: the note's answer, JSON (:mod:`ep_server.client.note`). Not JSON,
  or not in the note's shape: ``CLIENT_ERROR``, "unreadable answer", as for
  a gRPC reply the client cannot read.
* 502, 503, 504: the site (or a proxy before it) is not ready; retried
  (:data:`RETRIED`), then ``UNREACHABLE``.
* Any other status: ``REFUSED``. A ``google.rpc.Status`` body (an EP's
  error, ``{"code": 3, "message": ...}``) gives the code and message;
  another body gives the code the HTTP status stands for and the body's
  first words.

Answers are read up to a limit, and never decompressed (the client asks for
none): a site cannot make the client hold more than the limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import grpc

from ep_server.client.convert import answer_from_json
from ep_server.client.note import NoteError, response_json
from ep_server.client.results import Answer, Failure, FailureKind

__all__ = ["MAX_ANSWER_BYTES", "RETRIED", "Reply", "answer_failure", "reply_outcome"]

#: The most bytes of a reply read. An EP's answer is a few kilobytes.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Statuses that say "not now": retried within the deadline.
RETRIED = frozenset({502, 503, 504})
#: How much of a body that is not an answer a failure quotes.
_QUOTED = 200

_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: The gRPC code each HTTP status stands for (google/rpc/code.proto's
#: mapping, read backwards; 502 as gRPC reads it from a proxy).
_FROM_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply as read: status, the headers that matter, and the body
    (at most the limit; ``cut`` when there was more)."""

    url: str
    status: int
    body: bytes
    cut: bool = False
    content_type: str = ""
    encoding: str = ""
    location: str = ""


def reply_outcome(reply: Reply, limit: int = MAX_ANSWER_BYTES) -> Answer | Failure:
    """What ``reply`` says: the site's answer, or why there is none."""
    if 200 <= reply.status < 300:
        return _answer(reply, limit)
    if reply.status in RETRIED:
        return _error(reply, FailureKind.UNREACHABLE)
    return _error(reply, FailureKind.REFUSED)


def answer_failure(message: str) -> Failure:
    """A site answered, but not in a form the client can read."""
    return Failure(FailureKind.CLIENT_ERROR, f"unreadable answer: {message}")


def _answer(reply: Reply, limit: int) -> Answer | Failure:
    if reply.cut:
        return answer_failure(f"larger than {limit} bytes; not read")
    if reply.encoding not in ("", "identity"):
        return answer_failure(f"sent with Content-Encoding {reply.encoding}, not asked for")
    try:
        data = _json(reply.body)
    except ValueError as exc:
        kind = reply.content_type or "no content type"
        return answer_failure(f"not JSON ({kind}; {exc}): {_quote(reply.body)}")
    try:
        return answer_from_json(response_json(data))
    except NoteError as exc:
        return answer_failure(f"not the note's answer: {exc}")
    except Exception as exc:  # a value of the wrong type, as protobuf's JSON reader finds it
        return answer_failure(f"{type(exc).__name__}: {exc}")


def _error(reply: Reply, kind: FailureKind) -> Failure:
    status = _status(reply.body)
    if status is not None:
        code, message = status
        return Failure(kind, f"HTTP {reply.status}: {message}", code)
    code = _FROM_HTTP.get(reply.status, grpc.StatusCode.UNKNOWN)
    where = f"HTTP {reply.status} from POST {reply.url}"
    if 300 <= reply.status < 400:
        to = f" to {reply.location}" if reply.location else " without a Location"
        return Failure(kind, f"{where}: redirected{to}, not followed", code)
    quoted = _quote(reply.body)
    return Failure(kind, f"{where}: {quoted}" if quoted else where, code)


def _status(body: bytes) -> tuple[grpc.StatusCode, str] | None:
    """The code and message of a ``google.rpc.Status`` body, if it is one."""
    try:
        data = _json(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    code, message = data.get("code"), data.get("message")
    if type(code) is not int or code not in _CODES or not isinstance(message, str):
        return None
    return _CODES[code], message or _CODES[code].name


def _json(body: bytes) -> Any:
    """Strict JSON: NaN, infinities and numbers out of a double's range are
    not JSON, and absurd nesting is refused, never a RecursionError."""
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def _quote(body: bytes) -> str:
    """The first words of a body, spaces collapsed (control characters are
    escaped where it is printed)."""
    text = " ".join(body[: _QUOTED * 4].decode("utf-8", "replace").split())
    return text if len(text) <= _QUOTED else text[: _QUOTED - 3] + "..."
