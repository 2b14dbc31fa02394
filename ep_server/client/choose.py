"""Choosing among answers: pure functions, no gRPC.

An offer is acceptable when its service type is one the client understands.
``accept`` lists those service types, most preferred first; an empty
``accept`` takes every service type as equally good. Acceptable offers are
ranked by that preference first, then by a pluggable key on what is offered
(default: most cores), then by the order they came in (the site's own
preference among its offers is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ep_server.client.results import Offer, Result
from ep_server.client.sites import Site
from ep_server.model import IntRange

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

__all__ = [
    "Choice",
    "RankKey",
    "candidates",
    "choose",
    "fastest",
    "most_cores",
    "most_memory",
    "preference",
    "rank",
]


@dataclass(frozen=True, slots=True)
class Choice:
    """An acceptable offer, with the result it came in and its preference
    (0 is the most preferred service type)."""

    result: Result
    offer: Offer
    preference: int = 0

    @property
    def site(self) -> Site:
        """The site that made the offer."""
        return self.result.site


RankKey = Callable[[Choice], "SupportsRichComparison"]


def preference(servicetype: str, accept: Sequence[str]) -> int | None:
    """The rank of ``servicetype`` in ``accept`` (0 = best), ``None`` if it is
    not acceptable. Everything is acceptable, equally, when ``accept`` is empty."""
    if not accept:
        return 0
    return accept.index(servicetype) if servicetype in accept else None


def candidates(results: Iterable[Result], accept: Sequence[str] = ()) -> list[Choice]:
    """Every acceptable offer of every YES answer, in the order given."""
    choices = []
    for result in results:
        answer = result.answer
        for offer in answer.offers if answer is not None and answer.yes else ():
            rank_ = preference(offer.servicetype, accept)
            if rank_ is not None:
                choices.append(Choice(result, offer, rank_))
    return choices


def _offered(rng: IntRange | None) -> tuple[int, int]:
    """Sort key for "most offered": the range's max (else its min), largest
    first; an offer that states no amount sorts after every one that does."""
    amount = None if rng is None else (rng.max if rng.max is not None else rng.min)
    return (1, 0) if amount is None else (0, -amount)


def most_cores(choice: Choice) -> tuple[int, int]:
    """Rank key: most cores offered first."""
    resources = choice.offer.resources
    return _offered(resources.cores if resources else None)


def most_memory(choice: Choice) -> tuple[int, int]:
    """Rank key: most memory offered first."""
    resources = choice.offer.resources
    return _offered(resources.memory if resources else None)


def earliest(choice: Choice) -> tuple[int, float]:
    """Rank key: the earliest time slot first (offers without a slot, that
    is offers of "now", before any)."""
    slot = choice.offer.slot
    return (0, 0.0) if slot is None else (1, slot.start.timestamp())


def fastest(choice: Choice) -> float:
    """Rank key: the site that answered soonest first."""
    return choice.result.elapsed


def rank(choices: Iterable[Choice], key: RankKey = most_cores) -> list[Choice]:
    """Sort by preference, then ``key``; ties keep their order (stable)."""
    return sorted(choices, key=lambda c: (c.preference, key(c)))


def choose(
    results: Iterable[Result], accept: Sequence[str] = (), key: RankKey = most_cores
) -> Choice | None:
    """The best acceptable offer, or ``None`` when no acceptable YES came."""
    ranked = rank(candidates(results, accept), key)
    return ranked[0] if ranked else None
