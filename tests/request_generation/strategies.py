"""Hypothesis strategies for generated ``Ask`` requests.

Random and adversarial task types; taskinfo of every shape (random JSON with
unicode keys, NaN and non-UTF-8 strings; docker- and jupyter-shaped; deeply
nested; one huge string); resources with int64 extremes; schedules with
out-of-range times; unknown fields; and valid requests' bytes mutated the way
a broken client or a fuzzer would. :data:`ROBUST` is the settings profile the
tests share.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from request_generation.encoding import Ask, BadUtf8, length_delimited, varint
from request_generation.oracle import (
    CLAIMED,
    DURATION_MAX,
    KNOWN_GOOD_TASKTYPES,
    MAX_TASKINFO_BYTES,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
)

ROBUST = settings(
    deadline=None,
    database=None,  # keep .hypothesis/ out of the repository
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


def _is_bad_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


NON_FINITE = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf])
INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
#: Keys: short (long keys have their own test in test_reply_limits.py), with
#: the empty key, NUL, bidi controls, emoji, dots and brackets that look like paths.
KEYS = st.one_of(
    st.sampled_from(["", "\x00", "image", "ports", "a.b", "[0]", "\u202e", "\U0001f600", "é"]),
    st.text(max_size=8),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    INT64,
    st.text(max_size=24),
)
#: Scalars with a small chance of NaN/±inf (any NaN payload) or a non-UTF-8 string.
LEAVES = st.one_of(
    SCALARS,
    st.floats().filter(lambda x: not math.isfinite(x)),
    st.binary(min_size=1, max_size=4).filter(_is_bad_utf8).map(BadUtf8),
)


def json_values(leaves: st.SearchStrategy[Any] = LEAVES) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4)
        ),
        max_leaves=20,
    )


RANDOM_TASKINFO = st.dictionaries(KEYS, json_values(), max_size=6)

IMAGES = st.one_of(
    st.sampled_from(
        [
            "docker.io/example:1.0",
            "example",
            "localhost:5000/a/b:tag",
            "ghcr.io/x/y@sha256:" + "a" * 64,
            "Docker.io/UPPER",
            "a" * 256,
            "registry:99999999999999999999/x",
            "[::1]:5000/x",
            "x:" + "t" * 129,
            "",
        ]
    ),
    st.text(max_size=64),
    st.from_regex(r"[a-z0-9.:/@_-]{1,80}", fullmatch=True),
)
PORT_NUMBERS = st.one_of(
    INT64,
    st.integers(-5, 70000),
    st.floats(),
    st.booleans(),
    st.text(max_size=6),
    st.none(),
)
PORT = st.fixed_dictionaries(
    {},
    optional={
        "internal": PORT_NUMBERS | st.fixed_dictionaries({"port": PORT_NUMBERS}),
        "external": PORT_NUMBERS | st.fixed_dictionaries({"port": PORT_NUMBERS}),
        "protocol": st.sampled_from(["TCP", "udp", "sctp", "", "\x00"]) | st.text(max_size=5),
        "access": SCALARS,
    },
)
#: Plugin lists stay short here; long ones have their own tests (test_reply_limits.py,
#: test_server_resources.py).
PORTS = st.lists(PORT | SCALARS, max_size=6) | SCALARS
PLATFORMS = st.one_of(
    st.sampled_from(["linux/amd64", "linux/arm64/v8", "windows/amd64", "linux", "/", "a/b/c/d"]),
    st.text(max_size=20),
    st.fixed_dictionaries(
        {}, optional={"os": SCALARS, "architecture": SCALARS, "variant": SCALARS}
    ),
    SCALARS,
)
DOCKER_TASKINFO = st.fixed_dictionaries(
    {},
    optional={
        "image": st.one_of(
            IMAGES,
            st.fixed_dictionaries(
                {},
                optional={
                    "locations": st.lists(IMAGES | SCALARS, max_size=4) | SCALARS,
                    "digest": st.sampled_from(["sha256:" + "0" * 64, "sha256:xyz", "md5:00"])
                    | SCALARS,
                    "platform": PLATFORMS,
                },
            ),
            SCALARS,
        ),
        "privileged": st.booleans() | SCALARS,
        "ports": PORTS,
        "network": st.one_of(
            st.sampled_from(["host", "HOST", "bridge", "none"]),
            st.fixed_dictionaries({}, optional={"mode": SCALARS | st.just("host"), "ports": PORTS}),
            SCALARS,
        ),
        "environment": st.one_of(
            st.dictionaries(KEYS, SCALARS, max_size=4),
            st.lists(st.sampled_from(["A=1", "=x", "B", "C=", ""]) | SCALARS, max_size=4),
            SCALARS,
        ),
        "entrypoint": st.one_of(st.text(max_size=10), st.lists(SCALARS, max_size=3), SCALARS),
        "platform": PLATFORMS,
        "extra": json_values(),
    },
)
JUPYTER_TASKINFO = st.fixed_dictionaries(
    {},
    optional={
        "notebook": st.one_of(
            st.sampled_from(
                [
                    "https://example.org/nb.ipynb",
                    "http://",
                    "file:///etc/passwd",
                    "/etc/passwd",
                    "/proc/self/fd/0",
                    "relative/nb.ipynb",
                    "ftp://x/y",
                    "/a\x00b",
                    "http://[::1",
                ]
            ),
            st.text(max_size=40),
            st.fixed_dictionaries({}, optional={"location": SCALARS, "kernel": SCALARS}),
            SCALARS,
        ),
        "location": SCALARS,
        "kernel": st.sampled_from(["python", "python3", "R", "ir", ""]) | SCALARS,
        "language": SCALARS,
        "languages": st.lists(st.sampled_from(["python", "julia"]) | SCALARS, max_size=4) | SCALARS,
    },
)
ADVERSARIAL_TASKTYPES = st.one_of(
    st.sampled_from(KNOWN_GOOD_TASKTYPES),
    st.sampled_from(KNOWN_GOOD_TASKTYPES).flatmap(
        lambda t: st.sampled_from([" ", "\x00", "\n", "é", "\u202e", "%", "%zz", "#", "\x7f"]).map(
            lambda suffix: t + suffix
        )
    ),
    st.text(max_size=64),
    st.from_regex(
        r"[A-Za-z][A-Za-z0-9+.-]{0,8}:[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{0,40}", fullmatch=True
    ),
    # Around and far past the 2,048-character limit.
    st.integers(2040, 2056).map(lambda n: "uri://" + "x" * (n - 6)),
    st.tuples(st.integers(1, 5000), st.characters()).map(lambda t: t[1] * t[0]),
    st.binary(min_size=1, max_size=8).filter(_is_bad_utf8).map(BadUtf8),
)
_NOW = int(time.time())
SECONDS = st.one_of(
    st.integers(_NOW, _NOW + 366 * 86400),
    st.sampled_from([0, -1, TIMESTAMP_MIN, TIMESTAMP_MAX, TIMESTAMP_MAX + 1, 2**63 - 1, -(2**63)]),
    INT64,
)
NANOS = st.none() | st.sampled_from([0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)])
TIMES = st.tuples(st.none() | SECONDS, NANOS)
DURATIONS = st.tuples(
    st.integers(0, 86400) | st.sampled_from([-1, DURATION_MAX, DURATION_MAX + 1]) | INT64,
    NANOS,
)


@st.composite
def sane_windows(draw: st.DrawFn) -> tuple[Any, Any]:
    start = draw(st.integers(_NOW + 3600, _NOW + 300 * 86400))
    return (start, 0), (start + draw(st.integers(0, 7 * 86400)), None)


SCHEDULES = st.none() | st.fixed_dictionaries(
    {
        "windows": st.lists(
            sane_windows() | st.tuples(st.none() | TIMES, st.none() | TIMES), max_size=4
        )
    },
    optional={"min": st.none() | DURATIONS, "max": st.none() | DURATIONS},
)
RANGES = st.fixed_dictionaries({}, optional={"min": INT64, "max": INT64})
RESOURCES = st.none() | st.fixed_dictionaries({}, optional={"cores": RANGES, "memory": RANGES})


@st.composite
def unknown_fields(draw: st.DrawFn) -> bytes:
    """Fields the proto does not define (numbers from 100 up, leaving room
    for the protocol to grow): random wire types and payloads."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        number = draw(st.sampled_from([100, 2047, 2048, 2**29 - 1]) | st.integers(100, 2**29 - 1))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        key = varint(number << 3 | wire)
        if wire == 0:
            out += key + varint(draw(INT64))
        elif wire == 1:
            out += key + draw(st.binary(min_size=8, max_size=8))
        elif wire == 5:
            out += key + draw(st.binary(min_size=4, max_size=4))
        else:
            out += length_delimited(number, draw(st.binary(max_size=40)))
    return out


@st.composite
def deep_values(draw: st.DrawFn, min_depth: int, max_depth: int) -> dict[Any, Any]:
    """A taskinfo ``depth`` levels deep, through objects and lists, with a
    leaf that may be NaN; sometimes beside ordinary fields."""
    depth = draw(st.integers(min_depth, max_depth))
    kinds = draw(st.lists(st.booleans(), min_size=depth - 1, max_size=depth - 1))
    node: Any = draw(LEAVES | st.just({}) | st.just([]))
    for is_list in kinds:
        node = [node] if is_list else {draw(st.sampled_from(["a", "", "\x00", "é"])): node}
    top = node if isinstance(node, dict) else {"l": node}
    if draw(st.booleans()):
        top = {**draw(st.dictionaries(KEYS, SCALARS, max_size=3)), "deep": top}
    return top


@dataclass(frozen=True)
class Huge:
    """A taskinfo with one huge string, kept as a recipe so that hypothesis
    prints a line, not 300 KiB, when it reports an example."""

    where: str
    char: str
    target: int
    other: Any

    def taskinfo(self) -> dict[Any, Any]:
        text = self.char * (self.target // len(self.char.encode()))
        if self.where == "image":
            return {"image": text}
        if self.where == "list":
            return {"ports": [text], "x": self.other}
        if self.where == "nan-beside":
            return {"blob": text, "n": math.nan}
        return {self.other: text}


#: One huge string (up to ~300 KiB encoded) in an otherwise small taskinfo:
#: a docker image, a key, or a plain value; sizes around the 256 KiB limit.
HUGE = st.builds(
    Huge,
    st.sampled_from(["image", "value", "list", "nan-beside"]),
    st.characters(codec="utf-8") | st.sampled_from(["\x00", "a", "\U0001f600"]),
    st.integers(0, 300 * 1024) | st.integers(MAX_TASKINFO_BYTES - 200, MAX_TASKINFO_BYTES + 200),
    KEYS,
)


TASKINFOS = st.one_of(
    st.none(),
    RANDOM_TASKINFO,
    DOCKER_TASKINFO,
    JUPYTER_TASKINFO,
    deep_values(1, 40),
)


@st.composite
def asks(draw: st.DrawFn) -> Ask:
    tasktype = draw(st.sampled_from(CLAIMED) | ADVERSARIAL_TASKTYPES)
    unknown = draw(st.just(b"") | unknown_fields())
    ask = Ask(tasktype, draw(TASKINFOS), draw(RESOURCES), unknown, draw(SCHEDULES))
    return ask


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid request's bytes, then truncated, bit-flipped, spliced or
    with bytes inserted: the shapes a broken client or a fuzzer sends."""
    data = bytearray(
        Ask(
            draw(st.sampled_from(CLAIMED)),
            draw(st.just({"image": "docker.io/example:1.0"}) | RANDOM_TASKINFO),
            draw(RESOURCES),
        ).encode()
    )
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0B, 0x0C, 0x0F]))
    return bytes(data)
