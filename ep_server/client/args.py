"""The ``ep`` command line's arguments: the parser and its value converters.

Every converter raises :class:`argparse.ArgumentTypeError` with a message
naming the bad value, so argparse reports it as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ep_server.client.convert import check_taskinfo
from ep_server.client.targets import is_url, parse_endpoint, parse_url
from ep_server.model import IntRange, Resources, Schedule, TaskQuery, Window, parse_bytes
from ep_server.uri import uri_problem

__all__ = ["UsageError", "build_parser", "query_from_args"]

DEFAULT_DEADLINE = 10.0
#: The longest --deadline: grpc misbehaves past ~1e10 seconds, and a day is
#: more than anyone waits for an answer.
MAX_DEADLINE = 86_400.0
_INT64_MAX = 2**63 - 1


class UsageError(Exception):
    """Arguments that parse but do not fit together; exit status 2."""


def parse_range(text: str, amount: Callable[[str], int]) -> IntRange:
    """``MIN``, ``MIN:MAX``, ``MIN:`` or ``:MAX``, each end read by ``amount``."""
    low_text, _, high_text = text.partition(":")
    try:
        low = amount(low_text) if low_text else None
        high = amount(high_text) if high_text else None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    for end in (low, high):
        if end is not None and end > _INT64_MAX:  # the protocol's int64
            raise argparse.ArgumentTypeError(f"{text!r}: {end} is out of range")
    if low is None and high is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN[:MAX]")
    if low is not None and high is not None and low > high:
        raise argparse.ArgumentTypeError(f"{text!r}: MIN is greater than MAX")
    return IntRange(low, high)


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def cores_arg(text: str) -> IntRange:
    """``--cores MIN[:MAX]``."""
    return parse_range(text, _count)


def memory_arg(text: str) -> IntRange:
    """``--memory 8GiB[:16GiB]``, units as :func:`ep_server.model.parse_bytes`."""
    return parse_range(text, parse_bytes)


class _NotJSON(ValueError):
    """NaN, Infinity, or a number too large for a double: Python's json
    reads them, JSON and the protocol have no such numbers."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"{text} is out of range for a JSON number")
    return value


def _loads(text: str) -> Any:
    """Strict JSON: NaN, Infinity and overflowing numbers raise _NotJSON,
    absurd nesting a ValueError, never a RecursionError."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json_object(text: str, source: str) -> dict[str, Any]:
    try:
        value = _loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{source} must be a JSON object, not {value!r:.40}")
    return value


def taskinfo_arg(text: str) -> dict[str, Any]:
    """``--taskinfo JSON`` or ``--taskinfo @file.json``."""
    if not text.startswith("@"):
        return _json_object(text, "--taskinfo")
    if not text[1:]:
        raise argparse.ArgumentTypeError("--taskinfo @FILE: the file name is missing")
    try:
        content = Path(text[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{text[1:]} is not UTF-8 text") from None
    return _json_object(content, text[1:])


def set_arg(text: str) -> tuple[list[str], Any]:
    """``--set key=value``: a dotted key path, and the value read as JSON
    when it parses as JSON, as a plain string otherwise."""
    key, sep, raw = text.partition("=")
    path = key.split(".")
    if not sep or not all(part.strip() for part in path):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE (KEY may be a.b.c)")
    try:
        return path, _loads(raw)
    except _NotJSON as exc:
        if raw.strip() in ("NaN", "Infinity", "-Infinity"):
            return path, raw  # not JSON: a plain string, like any other word
        raise argparse.ArgumentTypeError(f"--set {key}: {exc}") from None
    except ValueError:
        return path, raw


def apply_sets(taskinfo: dict[str, Any], sets: Iterable[tuple[list[str], Any]]) -> dict[str, Any]:
    """``taskinfo`` with each ``--set`` applied in order, nesting dotted keys.

    :raises UsageError: when a key path runs through a value that is not an object.
    """
    for path, value in sets:
        node = taskinfo
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                dotted = ".".join(path[: i + 1])
                raise UsageError(f"--set {'.'.join(path)}: {dotted} is already set, not an object")
        node[path[-1]] = value
    return taskinfo


def uri_arg(text: str) -> str:
    """A task or service type URI."""
    problem = uri_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def endpoint_arg(text: str) -> str:
    """``HOST:PORT``, ``dns:///NAME:PORT`` or ``HOST:PORT,HOST:PORT,...``
    (the replicas of one site)."""
    if is_url(text):
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, got the URL {text!r}: a site that speaks the note's "
            "HTTP interface is only asked (ep ask --endpoint URL)"
        )
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def site_endpoint_arg(text: str) -> str:
    """What ``ep ask --endpoint`` takes: a gRPC address (:func:`endpoint_arg`)
    or the URL of a site that speaks the note's HTTP interface."""
    if "://" in text and not is_url(text) and not text.startswith("dns:"):
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT or an http:// or https:// URL, got {text!r}"
        )
    if not is_url(text):
        return endpoint_arg(text)
    try:
        return parse_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sites_arg(text: str) -> Path | str:
    """What ``ep ask --sites`` takes: a site list file, or the URL of one
    site that speaks the note's HTTP interface (as ``--endpoint`` takes it)."""
    return site_endpoint_arg(text) if is_url(text) else Path(text)


def seconds_arg(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    if value > MAX_DEADLINE:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_DEADLINE:g} seconds")
    return value


_ADDRESS = (
    "the EP's HOST:PORT; or dns:///NAME:PORT or HOST:PORT,HOST:PORT,...: "
    "one site's replicas, calls spread over them"
)

#: ``--rank`` choices (see ep_server.client.choose).
RANKINGS = ("most-cores", "most-memory", "earliest", "fastest")


EXIT_STATUS = """\
exit status:
  0    ask: at least one acceptable YES; other commands: the EP answered
  1    ask: no acceptable YES (every site said NO or failed); others: the call failed
  2    usage error (bad arguments, an unreadable site list or taskinfo)
  130  interrupted (Ctrl-C); ask prints the answers already in"""


def _version() -> str:
    try:
        return importlib.metadata.version("ep-server")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``ep`` parser, with its ``ask``, ``info`` and booking commands."""
    parser = argparse.ArgumentParser(
        prog="ep",
        description="Ask IVOA ExecutionPlanner services whether they can run a task.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ep (ep-server) {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    ask = commands.add_parser(
        "ask",
        help="ask one or many EPs; list and rank the offers",
        description="Ask one or many EPs whether they can run a task; list and rank the offers.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_ask(ask)
    _add_common(_one_ep_command(commands, "info", "show what one EP can do (GetServiceInfo)"))
    for name, what, key in (
        ("accept", "book a time-slot offer (AcceptOffer)", "offer_id"),
        ("reject", "release a time-slot offer (RejectOffer)", "offer_id"),
        ("cancel", "cancel one of your bookings (CancelBooking)", "booking_id"),
    ):
        command = _one_ep_command(commands, name, what)
        command.add_argument(key, metavar=key.upper().replace("_", "-"))
        _add_common(command)
    _add_common(_one_ep_command(commands, "bookings", "list your bookings at one EP"))
    return parser


def _one_ep_command(
    commands: argparse._SubParsersAction[Any], name: str, what: str
) -> argparse.ArgumentParser:
    """A command for one EP, named by a HOST:PORT argument or --endpoint."""
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=what, description=what, epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    command.add_argument(
        "address", type=endpoint_arg, nargs="?", metavar="HOST:PORT", help=f"{_ADDRESS}"
    )
    command.add_argument(
        "--endpoint", dest="endpoint_option", type=endpoint_arg, metavar="HOST:PORT",
        help="the same as HOST:PORT, as ep ask takes it",
    )  # fmt: skip
    return command


class _Parser(argparse.ArgumentParser):
    """A command's parser; one for a single EP wants it named exactly once."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        if hasattr(parsed, "endpoint_option") and (parsed.address is None) == (
            parsed.endpoint_option is None
        ):
            self.error("name the EP once: HOST:PORT or --endpoint HOST:PORT")
        return parsed, rest


def address_from_args(args: argparse.Namespace) -> str:
    """The one EP a command names, by HOST:PORT or --endpoint."""
    return str(args.address or args.endpoint_option)


def _add_ask(ask: argparse.ArgumentParser) -> None:
    ask.add_argument(
        "--tasktype", required=True, type=uri_arg, metavar="URI", help="the task type asked about"
    )
    ask.add_argument(
        "--taskinfo", type=taskinfo_arg, metavar="JSON|@FILE", default=None,
        help="the taskinfo object, as JSON or @file.json",
    )  # fmt: skip
    ask.add_argument(
        "--set", dest="sets", action="append", type=set_arg, default=[], metavar="KEY=VALUE",
        help="set a taskinfo key (dotted keys nest; VALUE is JSON if it parses); "
        "applied over --taskinfo",
    )  # fmt: skip
    ask.add_argument("--cores", type=cores_arg, metavar="MIN[:MAX]", help="cores needed, e.g. 4:16")
    ask.add_argument("--memory", type=memory_arg, metavar="MIN[:MAX]", help="e.g. 8GiB:16GiB")
    ask.add_argument(
        "--sites", type=sites_arg, action="append", default=[], metavar="FILE|URL",
        help="TOML site list; repeat for more (--endpoint adds to them). "
        "An http:// or https:// URL is one site, as with --endpoint",
    )  # fmt: skip
    ask.add_argument(
        "--endpoint", dest="endpoints", action="append", type=site_endpoint_arg, default=[],
        metavar="HOST:PORT|URL", help="an EP to ask (plaintext unless --tls, --ca or --cert); "
        "repeat for more. "
        "Also dns:///NAME:PORT or HOST:PORT,HOST:PORT,...: one site's replicas, "
        "calls spread over them; or http(s)://HOST[:PORT]/PATH: a site that speaks the "
        "IVOA note's HTTP interface, asked with POST URL/accept (https:// is TLS, with "
        "--ca, --cert and --key if given)",
    )  # fmt: skip
    ask.add_argument(
        "--window", dest="windows", action="append", type=window_arg, default=[],
        metavar="START/END", help="when can I run this? an acceptable start window: "
        "now/+8h, +1d/+2d, tomorrow (that whole day, UTC), or ISO 8601 such as "
        "2030-03-04T09:00Z/2030-03-04T17:00Z; repeat for more. A site books at most "
        "[schedule] horizon_days ahead (366 by default)",
    )  # fmt: skip
    ask.add_argument(
        "--duration", type=duration_arg, metavar="MIN[:MAX]",
        help="with --window: how long the task runs, e.g. 2h or 2h:4h",
    )  # fmt: skip
    ask.add_argument(
        "--accept-servicetype", dest="accept", action="append", type=uri_arg, default=[],
        metavar="URI", help="acceptable service type, most preferred first (default: any)",
    )  # fmt: skip
    ask.add_argument(
        "--rank", choices=RANKINGS, default=None,
        help="order acceptable offers of equal preference by this (default: "
        "earliest with --window, else most-cores)",
    )  # fmt: skip
    _add_common(ask)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline", type=seconds_arg, default=DEFAULT_DEADLINE, metavar="SECONDS",
        help=f"overall deadline (default {DEFAULT_DEADLINE:g})",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON")
    tls = parser.add_argument_group(
        "security (for --endpoint and HOST:PORT; a site list sets TLS per site)"
    )
    tls.add_argument("--tls", action="store_true", help="TLS with the system's root CAs")
    tls.add_argument("--ca", type=Path, metavar="FILE", help="TLS, trusting this CA bundle")
    tls.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (mTLS)")
    tls.add_argument("--key", type=Path, metavar="FILE", help="client private key (mTLS)")
    tls.add_argument("--server-name", metavar="NAME", help="expected server certificate name")
    tls.add_argument(
        "--token-file", type=Path, metavar="FILE",
        help="send the bearer token in FILE (default: $EP_TOKEN, if set)",
    )  # fmt: skip


def query_from_args(args: argparse.Namespace) -> TaskQuery:
    """The :class:`TaskQuery` that ``ep ask`` arguments describe."""
    taskinfo = apply_sets(dict(args.taskinfo or {}), args.sets)
    resources = Resources(args.cores or IntRange(), args.memory or IntRange())
    schedule = None
    if args.windows or args.duration:
        if not (args.windows and args.duration):
            raise UsageError("--window and --duration go together")
        low, high = args.duration
        schedule = Schedule(tuple(args.windows), low, high)
    try:
        check_taskinfo(taskinfo)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return TaskQuery(args.tasktype, taskinfo, resources, schedule=schedule)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: not a duration (use e.g. 90m, 2h, 1d)")
    seconds = float(match[1]) * _SECONDS[match[2]]
    if seconds > 3660 * 86400:  # ten years: beyond any schedule horizon
        raise argparse.ArgumentTypeError(f"{text!r}: at most ten years")
    value = timedelta(seconds=seconds)
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def duration_arg(text: str) -> tuple[timedelta, timedelta | None]:
    """``2h`` or ``2h:4h``: the task's minimum and maximum duration."""
    low, sep, high = text.partition(":")
    result = (_duration(low), _duration(high) if sep else None)
    if result[1] is not None and result[1] < result[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: MAX is shorter than MIN")
    return result


def _instant(text: str, now: datetime) -> datetime:
    if text == "now":
        return now
    if text.startswith("+"):
        return now + _duration(text[1:])  # at most ten years: cannot overflow
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not an ISO 8601 time, now or +DURATION"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone (Z for UTC)")
    return value.astimezone(UTC)


#: Whole-day windows by name, in UTC: days after today.
_DAYS = {"today": 0, "tomorrow": 1}


def window_arg(text: str) -> Window:
    """``START/END``: an acceptable range of start times; or ``today`` or
    ``tomorrow``, that whole day in UTC."""
    now = datetime.now(UTC)
    if text in _DAYS:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        day = midnight + timedelta(days=_DAYS[text])
        return Window(day, day + timedelta(days=1))
    start, sep, end = text.partition("/")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START/END, today or tomorrow")
    window = Window(_instant(start, now), _instant(end, now))
    if window.end < window.start:
        raise argparse.ArgumentTypeError(f"{text!r}: END is before START")
    return window
