"""What each hook called while serving is given, and must give back.

One table, :data:`HOOKS`, says for each hook of :mod:`ep_server.hookspecs`
that runs per request: which arguments it gets per call (the others,
``config`` and ``host``, are bound once at start-up), how its result is held
to the contract, and the calling rules that differ by hook. The registry
binds every implementation with it and the caller applies it, so a plugin's
malformed result is a :class:`Malformed` outcome, never an exception or a
malformed answer further on.

The start-up hooks, ``ep_configure`` and ``ep_claims``, are called once, in
order, by :mod:`ep_server.plugins.loading`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ep_server.model import Cause, FrozenInfo, Offer, Reason, Resources, Verdict

__all__ = [
    "HOOKS",
    "MAX_OFFERS_PER_PLUGIN",
    "MAX_REASONS_PER_PLUGIN",
    "HookContract",
    "Malformed",
    "check_need",
    "check_refusals",
    "check_slot",
    "check_verdict",
]

log = logging.getLogger(__name__)

#: Most offers and reasons one plugin may put in an answer; the rest are
#: dropped (with a note), so no plugin can blow an answer past gRPC's limits.
MAX_OFFERS_PER_PLUGIN = 20
MAX_REASONS_PER_PLUGIN = 20


class Malformed(Exception):
    """A hook returned something its contract does not allow; the message
    says what, in words fit for a reason's message."""


@dataclass(frozen=True, slots=True)
class HookContract:
    """How one hook is called and checked."""

    name: str
    #: The arguments given on each call, in this order.
    arguments: tuple[str, ...]
    #: Turns a plugin's result into the checked value, or raises
    #: :class:`Malformed`; called as ``check(result, plugin_name)``.
    check: Callable[[Any, str], Any]
    #: A plain call left running past its deadline bars further calls of this
    #: hook on that plugin until it returns (so a stuck hook holds at most
    #: one thread, and whoever waits for it waits once).
    one_late_call: bool = False
    #: After a plain call that took longer than the whole plugin deadline
    #: returns, this hook is refused on that plugin for this many seconds.
    cooldown: float = 0.0


def check_verdict(value: object, plugin: str = "") -> Verdict:
    """An ``ep_evaluate`` result: a well-formed :class:`Verdict`, capped."""
    if type(value) is Verdict and _well_formed(value):
        return _capped(value, plugin)
    if not isinstance(value, Verdict):
        raise Malformed(f"ep_evaluate returned {type(value).__name__}, not a Verdict")
    if not value.offers and not value.reasons:
        raise Malformed("ep_evaluate declined without giving a reason")
    if not _well_formed(value):
        for offer in value.offers:
            if isinstance(offer, Offer) and isinstance(offer.serviceinfo, Mapping):
                problem = _not_json(offer.serviceinfo, "serviceinfo", _MAX_JSON_DEPTH)
                if problem:
                    raise Malformed(
                        f"ep_evaluate returned an offer of {offer.servicetype!r} whose"
                        f" serviceinfo is not JSON: {problem}"
                    )
        raise Malformed("ep_evaluate returned offers or reasons with fields of the wrong type")
    return _capped(value, plugin)  # a subclass of Verdict, well formed


def check_refusals(value: object, plugin: str = "") -> tuple[Reason, ...]:
    """An ``ep_policy`` result: None (allow), a Reason, or reasons."""
    if value is None:
        return ()
    if isinstance(value, Reason):
        reasons: tuple[object, ...] = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        reasons = tuple(value)
    else:
        raise Malformed("ep_policy must return None, a Reason or Reasons")
    if not all(_reason_ok(r) for r in reasons):
        raise Malformed("ep_policy must return None, a Reason or Reasons")
    return reasons  # type: ignore[return-value]  # each checked by _reason_ok


def check_need(value: object, plugin: str = "") -> dict[str, int] | None:
    """An ``ep_resources`` result: None (the default), or pool -> amount."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise Malformed(f"ep_resources returned {type(value).__name__}, not a mapping")
    need = {}
    for pool, amount in value.items():
        if not isinstance(pool, str) or type(amount) is not int or not 0 <= amount < 2**63:
            raise Malformed(f"ep_resources: {pool!r}: {amount!r} is not a non-negative int")
        need[pool] = amount
    return need


def check_slot(value: object, plugin: str = "") -> Reason | None:
    """An ``ep_slot`` result: None (the slot is fine) or a Reason (refused)."""
    if value is None or isinstance(value, Reason):
        return value
    raise Malformed(f"ep_slot returned {type(value).__name__}, not a Reason or None")


def _ignored(value: object, plugin: str = "") -> None:
    """``ep_booked`` and ``ep_cancelled`` return nothing that is used."""
    return None


#: Every hook called while serving, by name.
HOOKS: Mapping[str, HookContract] = {
    c.name: c
    for c in (
        HookContract("ep_evaluate", ("query",), check_verdict),
        HookContract("ep_policy", ("query",), check_refusals),
        HookContract("ep_resources", ("query",), check_need),
        HookContract("ep_slot", ("query", "slot"), check_slot, one_late_call=True, cooldown=30.0),
        HookContract("ep_booked", ("booking",), _ignored),
        HookContract("ep_cancelled", ("booking",), _ignored),
    )
}


def _capped(verdict: Verdict, plugin: str) -> Verdict:
    offers, reasons = verdict.offers, verdict.reasons
    if len(offers) <= MAX_OFFERS_PER_PLUGIN and len(reasons) <= MAX_REASONS_PER_PLUGIN:
        return verdict
    log.warning("plugin %s gave %d offers, %d reasons; capped", plugin, len(offers), len(reasons))
    kept = reasons
    if len(reasons) > MAX_REASONS_PER_PLUGIN:
        kept = reasons[: MAX_REASONS_PER_PLUGIN - 1]
        more = len(reasons) - len(kept)
        kept = (*kept, Reason("MORE_REASONS", f"and {more} more reasons", reasons[-1].cause))
    return Verdict(offers[:MAX_OFFERS_PER_PLUGIN], kept)


def _well_formed(verdict: Verdict) -> bool:
    """Whether every offer and reason has fields of the types the protocol
    needs; True or False only (what is wrong is worked out, for the
    message, only when something is)."""
    offers, reasons = verdict.offers, verdict.reasons
    if not offers and not reasons:
        return False
    for offer in offers:
        if not _offer_ok(offer):
            return False
    return not reasons or all(_reason_ok(reason) for reason in reasons)


def _offer_ok(offer: object) -> bool:
    """An Offer whose fields have the types the protocol needs (a plugin's
    float where an int belongs must not fail the whole answer later)."""
    return (
        isinstance(offer, Offer)
        and isinstance(offer.servicetype, str)
        and isinstance(offer.serviceinfo, Mapping)
        and _json_ok(offer.serviceinfo, _MAX_JSON_DEPTH)
        and isinstance(offer.message, str)
        and (offer.resources is None or _resources_ok(offer.resources))
    )


def _json_ok(value: object, depth: int) -> bool:
    """Whether ``value`` is plain JSON as :func:`_not_json` has it, without
    naming what is wrong: exact ``dict``, ``list``, ``tuple``, ``str``,
    ``int``, ``bool``, ``float`` and None are checked here, anything else
    by :func:`_not_json` itself."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]  # a float
    if kind is FrozenInfo:  # checked when it was made; only its depth is left
        return bool(value._depth <= depth)  # type: ignore[attr-defined]  # a FrozenInfo
    if kind is dict:
        if depth <= 0:
            return False
        for key, item in value.items():  # type: ignore[attr-defined]  # a dict
            if type(key) is not str and not isinstance(key, str):
                return False
            kind = type(item)
            if not (kind is str or kind is int or kind is bool) and not _json_ok(item, depth - 1):
                return False
        return True
    if kind is list or kind is tuple:
        if depth <= 0:
            return False
        return all(_json_ok(item, depth - 1) for item in value)  # type: ignore[attr-defined]
    return not _not_json(value, "", depth)


#: How deep a serviceinfo may nest (what the ledgers' JSON columns and
#: protobuf's Struct take without trouble).
_MAX_JSON_DEPTH = 32


def _not_json(value: object, path: str, depth: int) -> str:
    """Why ``value`` is not plain JSON (str keys; str, finite numbers, bool,
    None, lists and mappings of them), or "" when it is: a serviceinfo is
    stored in the ledger as JSON and sent as a protobuf Struct, and one that
    is neither must be the plugin's error, not the whole Ask's."""
    if isinstance(value, str | bool | int) or value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"{path} is {value}"
    if depth <= 0:
        return f"{path} nests deeper than {_MAX_JSON_DEPTH} levels"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key of type {type(key).__name__}"
            problem = _not_json(item, f"{path}.{key}", depth - 1)
            if problem:
                return problem
        return ""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _not_json(item, f"{path}[{i}]", depth - 1)
            if problem:
                return problem
        return ""
    return f"{path} is a {type(value).__name__}"


def _resources_ok(resources: object) -> bool:
    """Each end of each range open (None), or an int64 that is not negative."""
    if not isinstance(resources, Resources):
        return False
    cores, memory = resources.cores, resources.memory
    for end in (cores.min, cores.max, memory.min, memory.max):
        if end is not None and (type(end) is not int or not 0 <= end < _INT64_END):
            return False
    return True


_INT64_END = 2**63


def _reason_ok(reason: object) -> bool:
    return (
        isinstance(reason, Reason)
        and isinstance(reason.code, str)
        and isinstance(reason.message, str)
        and isinstance(reason.field, str)
        and isinstance(reason.cause, Cause)
        and isinstance(reason.retryable, bool)
    )
