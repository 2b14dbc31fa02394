"""The calendar: interval arithmetic and the slot search, on plain integers.

Times are integers, microseconds since the Unix epoch in the ledgers (only
:data:`REFUSAL_STEP_US` depends on the unit). A hold is half-open,
``[start, end)``; a start window is closed, ``[start, end]``. Nothing here
knows about SQL, threads, locks or datetimes: a ledger hands the calendar
its holds through the :class:`Holds` protocol (an in-memory index, or rows
read from a database) and gets starts and slots back. The calendar never
changes a hold; each call reads the holds as they are during that call, so
a ledger calls it under its own lock or transaction.

Search
    A slot search sweeps the holds overlapping a stretch of time once: per
    pool it computes the intervals where adding the need would exceed the
    pool ("bad" intervals), merges them, and the earliest start is the
    first gap of the wanted length. Usage only drops where a hold ends, so
    every earliest start is the window's start or the end of a bad
    interval, which is a hold's end.

Choices the interface leaves open
    - A need for a pool the site does not have fits nowhere (the pool's
      capacity is 0); a need of 0 for it is ignored. Negative needs and
      capacities raise ``ValueError``.
    - Each offer's slot is as long as fits, up to ``max_duration`` (at
      least ``min_duration``): "a longer slot" is offered when there is room.
    - Pairing: windows are taken in order of start. Each round finds, for
      every candidate, its earliest acceptable (fitting, not refused) slot
      at or after the cursor. The earliest start wins; every candidate whose
      slot starts then gets an offer, in candidate order, if it still fits
      beside the offers placed before it. The next round starts at the
      first hold end after that start (the offers just placed count), or
      at the next window's start if that is later, so later offers start
      strictly later, at an instant where something changes.
    - Slots never start before ``now`` nor after ``now + horizon``.
    - A candidate whose slots are refused :data:`MAX_REFUSALS` times in one
      search gets none; after a refusal the search tries again a little
      later (see :data:`REFUSAL_STEP_US`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

__all__ = [
    "MAX_REFUSALS",
    "REFUSAL_STEP_US",
    "Calendar",
    "Found",
    "Hold",
    "Holds",
    "Refuse",
    "checked_need",
    "checked_pools",
    "first_fit",
    "merge",
    "occupancy",
    "over",
]

#: A candidate whose slots are refused this many times in one search gets none.
MAX_REFUSALS = 200
#: After a refused slot the search moves on by at most this much, so a
#: refusal of a short stretch (a maintenance hour) does not skip past starts
#: just after it.
REFUSAL_STEP_US = 15 * 60 * 1_000_000


@dataclass(slots=True, eq=False)
class Hold:
    """What one booking or offer holds over ``[start, end)``: ``need`` maps a
    pool to a positive amount. Compared by identity; never changed once
    made."""

    start: int
    end: int
    need: Mapping[str, int]


class Holds(Protocol):
    """Where the calendar reads the holds already placed."""

    def overlapping(self, lo: int, hi: int) -> Iterable[Hold]:
        """Every hold with ``start < hi`` and ``end > lo``, in any order."""
        ...


@dataclass(frozen=True, slots=True)
class Found:
    """A slot the search picked for ``needs[candidate]``; ``hold`` is what
    an offer of it holds."""

    candidate: int
    hold: Hold


#: ``refuse(candidate, start, end)``: True refuses that candidate's slot.
Refuse = Callable[[int, int, int], bool]


def checked_need(need: Mapping[str, int]) -> dict[str, int]:
    """The positive part of a need; negative amounts are a caller's bug."""
    out: dict[str, int] = {}
    for pool, amount in need.items():
        if amount < 0:
            raise ValueError(f"negative need {amount} for pool {pool!r}")
        if amount:
            out[pool] = int(amount)
    return out


def checked_pools(pools: Mapping[str, int]) -> dict[str, int]:
    """Pool name -> capacity; a negative capacity is a caller's bug."""
    if any(v < 0 for v in pools.values()):
        raise ValueError(f"negative pool capacity in {dict(pools)}")
    return {name: int(v) for name, v in pools.items()}


def _positive(value: int, what: str) -> int:
    if value <= 0:
        raise ValueError(f"{what} must be positive, not {value} microseconds")
    return value


# --- Interval arithmetic ------------------------------------------------------


def over(events: Iterable[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """The intervals where the running sum of ``(time, delta)`` events
    exceeds ``limit``, in order. Events at one instant apply together: holds
    are half-open, so one ending at t and one starting at t never overlap."""
    ordered = sorted(events)
    out: list[tuple[int, int]] = []
    usage, begin, i, n = 0, -1, 0, len(ordered)
    while i < n:
        t = ordered[i][0]
        while i < n and ordered[i][0] == t:
            usage += ordered[i][1]
            i += 1
        if usage > limit and begin < 0:
            begin = t
        elif usage <= limit and begin >= 0:
            out.append((begin, t))
            begin = -1
    return out


def merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted union of intervals (touching ones joined)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def first_fit(bad: Iterable[tuple[int, int]], lo: int, duration: int) -> int:
    """The earliest ``s >= lo`` with ``[s, s + duration)`` clear of the
    merged, sorted ``bad`` intervals. Past the last interval the answer is
    only a lower bound (the caller looked no further)."""
    s = lo
    for start, end in bad:
        if end <= s:
            continue
        if start >= s + duration:
            break
        s = end
    return s


def occupancy(
    booked: Iterable[Hold], offered: Iterable[Hold], pool: str, lo: int, hi: int
) -> list[tuple[int, int, int, int]]:
    """What ``booked`` and ``offered`` holds hold in ``pool`` over ``[lo,
    hi)``, as steps ``(start, end, booked, offered)``: contiguous from ``lo``
    to ``hi``, each a stretch over which both amounts stay the same, and no
    two neighbours alike. Empty when ``hi <= lo``."""
    if hi <= lo:
        return []
    changes: dict[int, list[int]] = {lo: [0, 0]}
    for column, holds in enumerate((booked, offered)):
        for hold in holds:
            amount = hold.need.get(pool, 0)
            if not amount or hold.start >= hi or hold.end <= lo:
                continue
            changes.setdefault(max(hold.start, lo), [0, 0])[column] += amount
            if hold.end < hi:
                changes.setdefault(hold.end, [0, 0])[column] -= amount
    steps: list[tuple[int, int, int, int]] = []
    held = [0, 0]
    instants = sorted(changes)
    for start, end in zip(instants, [*instants[1:], hi], strict=True):
        held = [held[0] + changes[start][0], held[1] + changes[start][1]]
        if steps and steps[-1][2:] == (held[0], held[1]):
            steps[-1] = (steps[-1][0], end, held[0], held[1])
        else:
            steps.append((start, end, held[0], held[1]))
    return steps


# --- The calendar -------------------------------------------------------------


class Calendar:
    """The holds on a site's pools, and where more fits among them.

    :param holds: the holds already placed.
    :param pools: pool name -> capacity (checked with :func:`checked_pools`).

    ``need`` arguments are checked needs (:func:`checked_need`); ``extra``
    holds count as if they were among ``holds`` (the offers a search has
    placed so far).
    """

    def __init__(self, holds: Holds, pools: Mapping[str, int]) -> None:
        self.holds = holds
        self.pools = checked_pools(pools)

    def find(
        self, need: Mapping[str, int], lo: int, hi: int, duration: int, extra: Sequence[Hold] = ()
    ) -> int | None:
        """The earliest start in ``[lo, hi]`` where ``need`` fits for
        ``duration``. Looks in chunks that double, so a start found early
        costs little, and jumps over each blocked stretch."""
        if any(self.pools.get(p, 0) < n for p, n in need.items()):
            return None
        step = duration
        while lo <= hi:
            top = min(hi, lo + step)
            start = first_fit(self.bad(need, lo, top + duration, extra), lo, duration)
            if start <= top:
                return start
            lo, step = max(start, top + 1), step * 2
        return None

    def extend(
        self,
        need: Mapping[str, int],
        start: int,
        shortest: int,
        longest: int,
        extra: Sequence[Hold] = (),
    ) -> int:
        """The end of the longest slot from ``start`` (which fits for
        ``shortest``) that still fits, up to ``longest``."""
        if longest <= shortest:
            return start + shortest
        bad = self.bad(need, start + shortest, start + longest, extra)
        return bad[0][0] if bad else start + longest

    def fits(
        self, need: Mapping[str, int], start: int, end: int, extra: Sequence[Hold] = ()
    ) -> bool:
        """Whether ``need`` fits over ``[start, end)``."""
        return not self.bad(need, start, end, extra)

    def bad(
        self, need: Mapping[str, int], lo: int, hi: int, extra: Sequence[Hold] = ()
    ) -> list[tuple[int, int]]:
        """Where, within ``[lo, hi)`` (possibly running past ``hi``), adding
        ``need`` to what is held would exceed some pool; merged and sorted."""
        limits = {p: self.pools.get(p, 0) - n for p, n in need.items()}
        if any(limit < 0 for limit in limits.values()):
            return [(lo, hi)]  # more than the whole pool: nowhere (callers check first)
        events: dict[str, list[tuple[int, int]]] = {p: [] for p in limits}
        near = (h for h in extra if h.start < hi and h.end > lo)
        for hold in chain(self.holds.overlapping(lo, hi), near):
            for pool, pool_events in events.items():
                amount = hold.need.get(pool)
                if amount:
                    pool_events.append((max(hold.start, lo), amount))
                    pool_events.append((hold.end, -amount))
        return merge(iv for p, ev in events.items() for iv in over(ev, limits[p]))

    def next_end(
        self, after: int, bound: int, pools: Iterable[str], extra: Sequence[Hold] = ()
    ) -> int:
        """The first end of a hold on ``pools`` in ``(after, bound]``, else
        ``bound``: the next instant at which a different slot may fit."""
        wanted = set(pools)
        near = (h for h in extra if h.start < bound and h.end > after)
        ends = (
            h.end
            for h in chain(self.holds.overlapping(after, bound), near)
            if after < h.end <= bound and not wanted.isdisjoint(h.need)
        )
        return min(ends, default=bound)

    def peak(self, pool: str, lo: int, hi: int) -> int:
        """The most held in ``pool`` at any instant of ``[lo, hi)``."""
        if hi <= lo:
            return 0
        events: list[tuple[int, int]] = []
        for hold in self.holds.overlapping(lo, hi):
            amount = hold.need.get(pool, 0)
            if amount:
                events.append((max(hold.start, lo), amount))
                events.append((min(hold.end, hi), -amount))
        events.sort()
        usage = best = 0
        for _, delta in events:
            usage += delta
            best = max(best, usage)
        return best

    def earliest(
        self, need: Mapping[str, int], duration: int, after: int, *, now: int, horizon: int
    ) -> int | None:
        """The earliest start at or after ``after`` (and ``now``), at most
        ``horizon`` after ``now``, where ``need`` fits for ``duration``."""
        _positive(duration, "duration")
        return self.find(checked_need(need), max(after, now), now + horizon, duration)

    def search(
        self,
        windows: Iterable[tuple[int, int]],
        min_duration: int,
        max_duration: int | None,
        needs: Sequence[Mapping[str, int]],
        *,
        limit: int,
        now: int,
        horizon: int,
        refuse: Refuse | None = None,
    ) -> list[Found]:
        """Up to ``limit`` slots for the candidates' ``needs`` that start in
        the ``(start, end)`` windows, earliest first, each fitting beside
        the holds and the slots found before it (see "Pairing" in the
        module's docstring). ``refuse`` is asked about each slot before it
        is picked."""
        shortest = _positive(min_duration, "min_duration")
        longest = shortest if max_duration is None else max_duration
        if longest < shortest:
            raise ValueError("max_duration is shorter than min_duration")
        checked = [checked_need(need) for need in needs]
        search = _Search(self, checked, shortest, longest, refuse)
        return search.run(sorted(windows, key=lambda w: w[0]), limit, now, now + horizon)


class _Search:
    """One search: windows in order, rounds within a window (see the
    module's "Pairing" note), slots found so far held in ``extra``."""

    def __init__(
        self,
        calendar: Calendar,
        needs: list[dict[str, int]],
        shortest: int,
        longest: int,
        refuse: Refuse | None,
    ) -> None:
        self.calendar, self.needs, self.refuse = calendar, needs, refuse
        self.shortest, self.longest = shortest, longest
        self.pools = {p for need in needs for p in need}
        self.extra: list[Hold] = []
        self.found: list[Found] = []

    def run(self, windows: list[tuple[int, int]], limit: int, now: int, last: int) -> list[Found]:
        for start, end in windows:
            hi = min(end, last)
            lo = self._resume(max(start, now))
            while lo <= hi and len(self.found) < limit and self._round(lo, hi, limit):
                lo = self._resume(lo)
        return self.found

    def _resume(self, lo: int) -> int:
        """Where to search next: ``lo``, unless a slot already starts at or
        after it; then the first hold end after that slot's start (the slot
        itself ends, so there is one), never a start a microsecond on."""
        if not self.found or lo > self.found[-1].hold.start:
            return lo
        last = self.found[-1].hold
        return self.calendar.next_end(last.start, last.end, self.pools, self.extra)

    def _round(self, lo: int, hi: int, limit: int) -> list[Found]:
        options = [(i, self._slot_for(i, lo, hi)) for i in range(len(self.needs))]
        starts = [h.start for _, h in options if h is not None]
        if not starts:
            return []
        first = min(starts)
        picked: list[Found] = []
        for i, hold in options:
            if hold is None or hold.start != first or len(self.found) >= limit:
                continue
            if picked and not self.calendar.fits(self.needs[i], hold.start, hold.end, self.extra):
                continue
            picked.append(Found(i, hold))
            self.found.append(picked[-1])
            self.extra.append(hold)
        return picked

    def _slot_for(self, i: int, lo: int, hi: int) -> Hold | None:
        """Candidate ``i``'s earliest fitting slot in ``[lo, hi]`` that is
        not refused."""
        need, calendar, shortest = self.needs[i], self.calendar, self.shortest
        for _ in range(MAX_REFUSALS):
            start = calendar.find(need, lo, hi, shortest, self.extra)
            if start is None:
                return None
            end = calendar.extend(need, start, shortest, self.longest, self.extra)
            if self.refuse is None or not self.refuse(i, start, end):
                return Hold(start, end, need)
            step = min(shortest, REFUSAL_STEP_US)
            lo = min(calendar.next_end(start, start + shortest, need, self.extra), start + step)
        return None
