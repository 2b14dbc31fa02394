"""Showing results to people (a table) and to programs (JSON)."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ep_server.client.choose import Choice
from ep_server.client.results import Failure, Offer, Reason, Result, ServiceInfo
from ep_server.model import Booking, IntRange, Resources, Slot
from ep_server.wire.plain_json import rfc3339

__all__ = [
    "describe_resources",
    "endpoint",
    "format_bytes",
    "info_lines",
    "offer_json",
    "printable",
    "result_json",
    "results_json",
    "table",
]

_HEADERS = ("#", "SITE", "ANSWER", "SERVICE TYPE", "ENDPOINT", "RESOURCES", "REASONS / NOTES")
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int) -> str:
    """``17179869184`` -> ``"16GiB"``; ``1536`` -> ``"1.5KiB"``; ``100`` -> ``"100B"``."""
    value, unit = float(n), _UNITS[0]
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    return f"{value:.1f}".rstrip("0").rstrip(".") + unit


def _range(rng: IntRange, fmt: Callable[[int], str] = str) -> str:
    if rng.min is not None and rng.max is not None:
        return fmt(rng.min) if rng.min == rng.max else f"{fmt(rng.min)}-{fmt(rng.max)}"
    if rng.min is not None:
        return f"{fmt(rng.min)}+"
    return f"<={fmt(rng.max)}" if rng.max is not None else ""


def describe_resources(resources: Resources | None) -> str:
    """``"cores 4-16, memory 8GiB"``, or ``"-"`` when nothing is stated."""
    if resources is None:
        return "-"
    parts = [
        f"cores {_range(resources.cores)}" if _range(resources.cores) else "",
        f"memory {_range(resources.memory, format_bytes)}" if _range(resources.memory) else "",
    ]
    return ", ".join(p for p in parts if p) or "-"


def endpoint(offer: Offer) -> str:
    """The offer's ``serviceinfo.endpoint``, else its serviceinfo as JSON."""
    return endpoint_of(offer.serviceinfo)


def endpoint_of(serviceinfo: Mapping[str, Any]) -> str:
    """``serviceinfo.endpoint``, else the serviceinfo as JSON."""
    value = serviceinfo.get("endpoint")
    if isinstance(value, str):
        return value
    return json.dumps(serviceinfo, separators=(",", ":")) if serviceinfo else "-"


def _reasons(reasons: Iterable[Reason]) -> str:
    return "; ".join(f"{r.code}: {r.message}" if r.message else r.code for r in reasons)


def _offer_row(place: str, name: str, word: str, offer: Offer) -> tuple[str, ...]:
    resources = describe_resources(offer.resources)
    notes = [offer.message] if offer.message else []
    if offer.slot is not None:
        slot = f"slot {offer.slot.start:%Y-%m-%d %H:%M}-{offer.slot.end:%Y-%m-%d %H:%M}Z"
        notes.insert(0, f"{slot}, offer {offer.id}" if offer.id else slot)
    return (place, name, word, offer.servicetype, endpoint(offer), resources, "; ".join(notes))


def _other_rows(result: Result, chosen: set[int]) -> list[tuple[str, ...]]:
    name, outcome = result.site.name, result.outcome
    if isinstance(outcome, Failure):
        return [("", name, "FAILED", "-", "-", "-", outcome.describe())]
    if not outcome.yes:
        return [("", name, outcome.word, "-", "-", "-", _reasons(outcome.reasons))]
    if not outcome.offers:  # a YES with nothing in it: shown, never dropped
        return [("", name, "YES (no offers)", "-", "-", "-", _reasons(outcome.reasons))]
    others = [o for o in outcome.offers if id(o) not in chosen]
    return [_offer_row("", name, "YES (not accepted)", o) for o in others]


def table(results: Sequence[Result], ranking: Sequence[Choice] = ()) -> str:
    """A text table: one row per offer, NO answer or failure. The ranked
    (acceptable) offers come first, numbered; the rest follow in the order
    of ``results``."""
    rows = [_offer_row(str(n), c.site.name, "YES", c.offer) for n, c in enumerate(ranking, 1)]
    chosen = {id(c.offer) for c in ranking}
    rows += [row for result in results for row in _other_rows(result, chosen)]
    return _layout([_HEADERS, *rows])


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (newlines,
    tabs, escape sequences from a remote site) shown as escapes, so no site
    can break the table or rewrite the screen."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def width(text: str) -> int:
    """Terminal columns (as wcwidth counts them, near enough): wide (CJK)
    characters take two; marks, format characters and Hangul vowel and
    final jamo (which join the syllable before them) take none."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me", "Cf") or "\u1160" <= char <= "\u11ff":
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def cut(text: str, columns: int) -> str:
    """``text`` cut to at most ``columns`` terminal columns, marked with ``...``."""
    if width(text) <= columns:
        return text
    kept, used = [], 0
    for char in text:
        used += _char_width(char)
        if used > columns - 3:
            break
        kept.append(char)
    return "".join(kept) + "..."


def _layout(rows: Sequence[Sequence[str]]) -> str:
    cells = [[printable(c) for c in row] for row in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = (
        "  ".join(c + " " * (w - width(c)) for c, w in zip(row, widths, strict=True))
        for row in cells
    )
    return "\n".join(line.rstrip() for line in lines)


def _range_json(rng: IntRange) -> dict[str, int]:
    return {k: v for k, v in (("min", rng.min), ("max", rng.max)) if v is not None}


def _resources_json(resources: Resources | None) -> dict[str, Any] | None:
    if resources is None:
        return None
    return {"cores": _range_json(resources.cores), "memory": _range_json(resources.memory)}


def _slot_json(slot: Slot) -> dict[str, str]:
    return {"start": rfc3339(slot.start), "end": rfc3339(slot.end)}


def offer_json(offer: Offer) -> dict[str, Any]:
    """An offer in the protocol's JSON field names."""
    result: dict[str, Any] = {
        "servicetype": offer.servicetype,
        "serviceinfo": dict(offer.serviceinfo),
        "resources": _resources_json(offer.resources),
        "plugin": offer.plugin,
        "message": offer.message,
    }
    if offer.slot is not None:
        result["slot"] = _slot_json(offer.slot)
        result["id"] = offer.id
        result["expire_time"] = rfc3339(offer.expire_time) if offer.expire_time else None
        result["hold"] = dict(offer.hold)
    return result


def _reason_json(reason: Reason) -> dict[str, Any]:
    cause = reason.cause.name if reason.cause else None
    return {
        "code": reason.code,
        "message": reason.message,
        "plugin": reason.plugin,
        "cause": cause,
        "retryable": reason.retryable,
        "field": reason.field,
        "earliest_slot": _slot_json(reason.earliest_slot) if reason.earliest_slot else None,
    }


def result_json(result: Result) -> dict[str, Any]:
    """One site's result: ``answer`` or ``failure``, with site and timing."""
    out: dict[str, Any] = {"site": result.site.name, "address": result.site.address}
    out["elapsed"] = round(result.elapsed, 4)
    outcome = result.outcome
    if isinstance(outcome, Failure):
        code = outcome.code.name if outcome.code else None
        failure = {"kind": outcome.kind.name, "code": code, "message": outcome.message}
        out["failure"] = {**failure, "attempts": outcome.attempts}
    else:
        out["answer"] = {
            "responseword": outcome.word,
            "offers": [offer_json(o) for o in outcome.offers],
            "reasons": [_reason_json(r) for r in outcome.reasons],
        }
    return out


def _choice_json(choice: Choice) -> dict[str, Any]:
    return {"site": choice.site.name, "address": choice.site.address, **offer_json(choice.offer)}


def results_json(results: Sequence[Result], ranking: Sequence[Choice] = ()) -> str:
    """Everything as one JSON document: ``results`` per site, the acceptable
    offers best first as ``ranking``, and the best as ``chosen`` (or null)."""
    doc = {
        "results": [result_json(r) for r in results],
        "ranking": [_choice_json(c) for c in ranking],
        "chosen": _choice_json(ranking[0]) if ranking else None,
    }
    return json.dumps(doc, indent=2)


def info_lines(address: str, info: ServiceInfo) -> str:
    """``GetServiceInfo`` as readable text."""
    cap = info.capacity
    memory = format_bytes(cap.memory)
    lines = [
        f"EP at {address}: ep-server {info.server_version}",
        f"capacity: {cap.cores} cores, {memory} memory, {cap.os}/{cap.architecture}",
        "task types:" if info.tasktypes else "task types: none",
    ]
    for tasktype in info.tasktypes:
        lines.append(f"  {tasktype.tasktype}")
        lines += [f"    -> {s.servicetype} (plugin {s.plugin})" for s in tasktype.services]
    lines.append("plugins:" if info.plugins else "plugins: none")
    for plugin in info.plugins:
        error = f": {plugin.error}" if plugin.error else ""
        lines.append(
            f"  {plugin.name} [{plugin.state}] {plugin.distribution} {plugin.version}{error}"
        )
    return "\n".join(printable(line) for line in lines)


def booking_line(booking: Booking) -> str:
    """One booking on one line."""
    slot = f"{booking.slot.start:%Y-%m-%d %H:%M}-{booking.slot.end:%Y-%m-%d %H:%M}Z"
    hold = ", ".join(
        f"{k} {format_bytes(v) if k == 'memory' else v}" for k, v in booking.need.items()
    )
    return printable(
        f"{booking.id}  {booking.state.name}  {slot}  {booking.servicetype}  "
        f"{endpoint_of(booking.serviceinfo)}  {hold}"
    )


def booking_json(booking: Booking) -> dict[str, Any]:
    """A booking in the protocol's JSON field names."""
    return {
        "id": booking.id,
        "offer_id": booking.offer_id,
        "state": booking.state.name,
        "owner": booking.owner,
        "plugin": booking.plugin,
        "servicetype": booking.servicetype,
        "serviceinfo": dict(booking.serviceinfo),
        "slot": _slot_json(booking.slot),
        "hold": dict(booking.need),
        "create_time": rfc3339(booking.create_time),
    }
