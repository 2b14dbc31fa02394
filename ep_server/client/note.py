"""Reading the IVOA note's answer: plain JSON values in, plain JSON values out.

A site that speaks the note's HTTP interface answers ``POST /accept`` with
a flat object::

    {"reponseword": "YES",
     "servicetype": "uri://docker-uws", "serviceinfo": {"endpoint": "..."},
     "interfaces": [{"servicetype": "uri://rosetta-rest-api", "serviceinfo": {...}}]}

:func:`response_json` turns it into the ``AskResponse`` it stands for, in
the protocol's JSON with its field names, for
:func:`ep_server.client.convert.answer_from_json` to read. What it
tolerates, since note servers in the wild differ:

* the verdict under either spelling, ``responseword`` (the protocol's) or
  ``reponseword`` (the note's examples'), or both when they agree;
* a YES with no ``interfaces``: its one offer is the top level's
  ``servicetype`` and ``serviceinfo``;
* keys it does not know, anywhere; a reason's ``cause`` as the protocol's
  name (``REASON_CAUSE_CAPACITY``) or short (``CAPACITY``); a cause it does
  not know is left unset.

What it refuses (:class:`NoteError`, saying how): no verdict, a verdict
other than ``YES`` or ``NO``, two that disagree, a YES without a
``servicetype``, ``interfaces`` or ``reasons`` that are not lists of objects.
This module knows no protobuf and no HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["VERDICT_KEYS", "NoteError", "response_json", "verdict"]

#: Where a verdict may be: the protocol's spelling, and the note's
#: examples' (which the note's clients read and write). The server writes
#: both (``ep_server.http.note.RESPONSE_WORD_KEYS``, the same keys).
VERDICT_KEYS = ("responseword", "reponseword")

_WORDS = ("YES", "NO")
#: An offer's keys, as the protocol's JSON names them.
_OFFER_KEYS = (
    "servicetype",
    "serviceinfo",
    "resources",
    "plugin",
    "message",
    "id",
    "expire_time",
    "slot",
    "hold",
)
_REASON_KEYS = ("code", "message", "plugin", "retryable", "field", "earliest_slot")
_CAUSE_PREFIX = "REASON_CAUSE_"


class NoteError(ValueError):
    """An answer that is not in the note's shape; the message says how."""


def verdict(answer: Mapping[str, Any]) -> str:
    """``"YES"`` or ``"NO"``, under either spelling of the key.

    :raises NoteError: when there is none, it is another word, or the two
        spellings disagree.
    """
    words = {key: answer[key] for key in VERDICT_KEYS if key in answer}
    if not words:
        raise NoteError("no verdict (neither responseword nor reponseword)")
    for key, value in words.items():
        if not isinstance(value, str) or value not in _WORDS:
            raise NoteError(f"{key} is {_short(value)}, not YES or NO")
    if len(set(words.values())) > 1:
        raise NoteError("responseword and reponseword disagree")
    word: str = next(iter(words.values()))
    return word


def response_json(answer: Any) -> dict[str, Any]:
    """The ``AskResponse`` a note answer stands for, in the protocol's JSON.

    A NO's offers are not read (a NO offers nothing).

    :raises NoteError: when ``answer`` is not in the note's shape.
    """
    if not isinstance(answer, Mapping):
        raise NoteError(f"the answer is a JSON {_json_type(answer)}, not an object")
    word = verdict(answer)
    offers = _offers(answer) if word == "YES" else []
    return {"responseword": word, "offers": offers, "reasons": _reasons(answer.get("reasons"))}


def _offers(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The top level's offer, then each of ``interfaces``, in order."""
    if not _has_servicetype(answer):
        raise NoteError("a YES without a servicetype")
    offers = [_picked(answer, _OFFER_KEYS)]
    for i, interface in enumerate(_objects(answer, "interfaces")):
        if not _has_servicetype(interface):
            raise NoteError(f"interfaces[{i}] has no servicetype")
        offers.append(_picked(interface, _OFFER_KEYS))
    return offers


def _reasons(value: Any) -> list[dict[str, Any]]:
    reasons = []
    for reason in _objects({"reasons": value}, "reasons"):
        shaped = _picked(reason, _REASON_KEYS)
        cause = reason.get("cause")
        if isinstance(cause, str) and cause:
            shaped["cause"] = cause if cause.startswith(_CAUSE_PREFIX) else _CAUSE_PREFIX + cause
        elif isinstance(cause, int) and not isinstance(cause, bool):
            shaped["cause"] = cause
        reasons.append(shaped)
    return reasons


def _objects(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """``parent[key]``: a list of objects, or nothing when absent or null."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise NoteError(f"{key} is not a list of objects")
    return value


def _has_servicetype(offer: Mapping[str, Any]) -> bool:
    servicetype = offer.get("servicetype")
    return isinstance(servicetype, str) and bool(servicetype)


def _picked(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: source[key] for key in keys if source.get(key) is not None}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "boolean" if isinstance(value, bool) else "number"
