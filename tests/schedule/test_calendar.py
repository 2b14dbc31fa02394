"""The calendar (ep_server.schedule.calendar) on its own, against a
brute-force model.

The model works on small integer times, one time unit at a time: usage at
``t`` is the sum of the holds with ``start <= t < end``; a need fits over
``[s, e)`` when it fits at every unit in it; the earliest start is found by
trying every start, the longest slot by trying every end. The calendar is
called with those times multiplied by a unit of 1 µs, 1 minute or 5 minutes
(so the 15-minute refusal step is sometimes a few units and sometimes
larger than any slot), and must give exactly the model's answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ep_server.schedule.calendar import (
    MAX_REFUSALS,
    REFUSAL_STEP_US,
    Calendar,
    Found,
    Hold,
    checked_need,
    checked_pools,
    first_fit,
    merge,
    occupancy,
    over,
)

#: Model times run over [0, SPAN) (holds may end a little past it).
SPAN = 40
UNITS = (1, 60_000_000, 300_000_000)
H_US = 3_600_000_000


class ListHolds:
    """The plainest :class:`~ep_server.schedule.calendar.Holds`: a list."""

    def __init__(self, holds: Iterable[Hold]) -> None:
        self.holds = list(holds)

    def overlapping(self, lo: int, hi: int) -> list[Hold]:
        return [h for h in self.holds if h.start < hi and h.end > lo]


# --- The model, one time unit at a time ----------------------------------------------

#: Model times that can matter lie in [LOW, HIGH): usage is 0 outside.
LOW, HIGH = -10, 3 * SPAN


class Model:
    """Usage per time unit, and every question the calendar answers asked of
    it by brute force: try every start, every end, every instant."""

    def __init__(self, holds: Iterable[Hold], pools: Mapping[str, int]) -> None:
        self.holds, self.pools = list(holds), pools
        self._clear: dict[frozenset[tuple[str, int]], list[int]] = {}

    def usage(self, pool: str, t: int) -> int:
        return sum(h.need.get(pool, 0) for h in self.holds if h.start <= t < h.end)

    def fits(self, need: Mapping[str, int], s: int, e: int) -> bool:
        """``need`` fits at every unit of ``[s, e)``."""
        blocked = self._blocked(need)
        return blocked[e - LOW] - blocked[s - LOW] == 0

    def find(self, need: Mapping[str, int], lo: int, hi: int, duration: int) -> int | None:
        return next((s for s in range(lo, hi + 1) if self.fits(need, s, s + duration)), None)

    def extend(self, need: Mapping[str, int], start: int, shortest: int, longest: int) -> int:
        ends = range(start + shortest, max(start + longest, start + shortest) + 1)
        return max(e for e in ends if self.fits(need, start, e))

    def next_end(self, after: int, bound: int, pools: Iterable[str]) -> int:
        wanted = set(pools)
        ends = [h.end for h in self.holds if after < h.end <= bound and wanted & set(h.need)]
        return min(ends, default=bound)

    def peak(self, pool: str, lo: int, hi: int) -> int:
        return max((self.usage(pool, t) for t in range(lo, hi)), default=0)

    def _blocked(self, need: Mapping[str, int]) -> list[int]:
        """How many units in [LOW, LOW + i) the need does not fit at, per i."""
        key = frozenset(need.items())
        if key not in self._clear:
            counts = [0]
            for t in range(LOW, HIGH):
                ok = all(self.usage(p, t) + n <= self.pools.get(p, 0) for p, n in need.items())
                counts.append(counts[-1] + (not ok))
            self._clear[key] = counts
        return self._clear[key]


def model_search(
    holds: list[Hold],
    pools: Mapping[str, int],
    windows: list[tuple[int, int]],
    shortest: int,
    longest: int,
    needs: list[dict[str, int]],
    limit: int,
    now: int,
    horizon: int,
    refuse: Callable[[int, int, int], bool],
    step: int,
) -> list[tuple[int, int, int]]:
    """The documented search ("Pairing" in the calendar's docstring) built
    from the brute-force pieces: ``(candidate, start, end)`` per slot."""
    wanted = {p for need in needs for p in need}
    found: list[tuple[int, int, int]] = []
    model = Model(holds, pools)  # remade with every slot found

    def slot_for(i: int, lo: int, hi: int) -> tuple[int, int] | None:
        for _ in range(MAX_REFUSALS):
            s = model.find(needs[i], lo, hi, shortest)
            if s is None:
                return None
            e = model.extend(needs[i], s, shortest, longest)
            if not refuse(i, s, e):
                return s, e
            lo = min(model.next_end(s, s + shortest, needs[i]), s + min(shortest, step))
        return None

    def resume(lo: int) -> int:
        if found and lo <= found[-1][1]:
            return model.next_end(found[-1][1], found[-1][2], wanted)
        return lo

    for w_start, w_end in sorted(windows, key=lambda w: w[0]):
        hi = min(w_end, now + horizon)
        lo = resume(max(w_start, now))
        while lo <= hi and len(found) < limit:
            options = [slot_for(i, lo, hi) for i in range(len(needs))]
            if all(o is None for o in options):
                break
            first = min(o[0] for o in options if o is not None)
            picked = False
            for i, o in enumerate(options):
                if o is None or o[0] != first or len(found) >= limit:
                    continue
                if picked and not model.fits(needs[i], *o):
                    continue
                found.append((i, *o))
                model = Model([*model.holds, Hold(o[0], o[1], needs[i])], pools)
                picked = True
            lo = resume(lo)
    return found


# --- Strategies -----------------------------------------------------------------------

pool_names = st.sampled_from(["a", "b"])
pools_st = st.fixed_dictionaries({"a": st.integers(0, 5), "b": st.integers(0, 4)})
#: Needs may name a pool the site lacks ("c") and hold 0 of a pool.
needs_st = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 4), max_size=3)


@st.composite
def holds_st(draw: st.DrawFn, max_size: int = 8) -> list[Hold]:
    """Holds that often touch (one starts where another ends) or start
    together: where an off-by-one shows."""
    out: list[Hold] = []
    for _ in range(draw(st.integers(0, max_size))):
        edges = [h.end for h in out] + [h.start for h in out]
        start = draw(
            st.sampled_from(edges) if edges and draw(st.booleans()) else st.integers(0, SPAN)
        )
        end = start + draw(st.integers(1, 12))
        need = draw(st.dictionaries(pool_names, st.integers(1, 3), max_size=2))
        out.append(Hold(start, end, need))
    return out


@dataclass
class Scene:
    """Holds (some of them ``extra``), pools and the unit, in model units."""

    holds: list[Hold]
    extra: list[Hold]
    pools: dict[str, int]
    unit: int

    @property
    def everything(self) -> list[Hold]:
        return self.holds + self.extra

    def model(self) -> Model:
        return Model(self.everything, self.pools)

    def calendar(self) -> Calendar:
        return Calendar(ListHolds(self.scaled(self.holds)), self.pools)

    def scaled(self, holds: Iterable[Hold]) -> list[Hold]:
        return [Hold(h.start * self.unit, h.end * self.unit, h.need) for h in holds]

    def back(self, us: int) -> int:
        """A calendar time in model units (it must fall on one)."""
        assert us % self.unit == 0, f"{us} µs is not on a {self.unit} µs unit"
        return us // self.unit


@st.composite
def scenes(draw: st.DrawFn) -> Scene:
    holds = draw(holds_st())
    cut = draw(st.integers(0, len(holds)))
    return Scene(holds[:cut], holds[cut:], draw(pools_st), draw(st.sampled_from(UNITS)))


# --- Interval arithmetic --------------------------------------------------------------


def runs(units: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive units as [start, end) intervals."""
    out: list[tuple[int, int]] = []
    for t in sorted(units):
        if out and out[-1][1] == t:
            out[-1] = (out[-1][0], t + 1)
        else:
            out.append((t, t + 1))
    return out


intervals_st = st.lists(
    st.tuples(st.integers(0, SPAN), st.integers(1, 10)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=8,
)


@given(st.lists(st.tuples(intervals_st, st.integers(1, 3)), max_size=3), st.integers(0, 6))
def test_over_is_where_the_running_sum_exceeds_the_limit(
    spans: list[tuple[list[tuple[int, int]], int]], limit: int
) -> None:
    """Events as holds make them: +amount at a start, -amount at the end."""
    events = [ev for ivs, amount in spans for s, e in ivs for ev in ((s, amount), (e, -amount))]
    total = {t: sum(d for u, d in events if u <= t) for t in range(0, SPAN + 12)}
    expected = runs({t for t, used in total.items() if used > limit})
    before = list(events)
    assert over(events, limit) == expected
    assert events == before  # the caller's list is left alone


@given(intervals_st)
def test_merge_is_the_sorted_union_with_touching_intervals_joined(
    intervals: list[tuple[int, int]],
) -> None:
    units = {t for s, e in intervals for t in range(s, e)}
    assert merge(intervals) == runs(units)


@given(intervals_st, st.integers(0, SPAN), st.integers(1, 8))
def test_first_fit_is_the_first_start_clear_of_every_interval(
    intervals: list[tuple[int, int]], lo: int, duration: int
) -> None:
    blocked = {t for s, e in intervals for t in range(s, e)}
    expected = next(s for s in range(lo, SPAN + 20) if not blocked & set(range(s, s + duration)))
    assert first_fit(runs(blocked), lo, duration) == expected


# --- Finding, extending, fitting, peaks ---------------------------------------------------
#
# Each test asks one drawn scene every question in a range, so that the
# instants where something changes (a hold's start or end, a window's end)
# are all asked about.

EXHAUSTIVE = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])


@EXHAUSTIVE
@given(scenes(), needs_st)
def test_find_is_the_earliest_start_in_the_range_where_the_need_fits(
    scene: Scene, need: dict[str, int]
) -> None:
    need, u, model = checked_need(need), scene.unit, scene.model()
    calendar, extra = scene.calendar(), scene.scaled(scene.extra)
    for lo, length, duration in itertools.product(range(SPAN + 1), (0, 3, SPAN), range(1, 9)):
        hi = lo + length
        got = calendar.find(need, lo * u, hi * u, duration * u, extra)
        expected = model.find(need, lo, hi, duration)
        assert (None if got is None else scene.back(got)) == expected, (lo, hi, duration)


def test_find_sees_a_hold_starting_in_the_last_instant_its_first_look_covers() -> None:
    # The first look covers starts in [0, 4] and so instants up to 4 + 4 - 1.
    calendar = Calendar(ListHolds([Hold(0, 4, {"a": 1}), Hold(7, 8, {"a": 1})]), {"a": 1})
    assert calendar.find({"a": 1}, 0, 100, 4) == 8


@EXHAUSTIVE
@given(scenes(), needs_st)
def test_extend_gives_the_longest_slot_that_fits_up_to_the_longest(
    scene: Scene, need: dict[str, int]
) -> None:
    need, u, model = checked_need(need), scene.unit, scene.model()
    calendar, extra = scene.calendar(), scene.scaled(scene.extra)
    for start, shortest, longer in itertools.product(range(SPAN + 1), range(1, 7), (0, 1, 3, 12)):
        if not model.fits(need, start, start + shortest):
            continue
        longest = shortest + longer
        got = calendar.extend(need, start * u, shortest * u, longest * u, extra)
        expected = model.extend(need, start, shortest, longest)
        assert scene.back(got) == expected, (start, shortest, longest)


@EXHAUSTIVE
@given(scenes(), needs_st)
def test_fits_and_bad_agree_with_usage_at_every_instant(scene: Scene, need: dict[str, int]) -> None:
    need, u, model = checked_need(need), scene.unit, scene.model()
    calendar, extra = scene.calendar(), scene.scaled(scene.extra)
    for start, length in itertools.product(range(SPAN + 1), range(1, 13)):
        end = start + length
        assert calendar.fits(need, start * u, end * u, extra) == model.fits(need, start, end)
        bad = calendar.bad(need, start * u, end * u, extra)
        assert bad == merge(bad)  # sorted, disjoint, touching ones joined
        assert {
            t for s, e in bad for t in range(scene.back(s), scene.back(e)) if start <= t < end
        } == {t for t in range(start, end) if not model.fits(need, t, t + 1)}, (start, end)


@EXHAUSTIVE
@given(scenes(), st.sets(st.sampled_from("abc")))
def test_next_end_is_the_first_end_of_a_hold_on_the_pools_in_the_range(
    scene: Scene, pools: set[str]
) -> None:
    u, model = scene.unit, scene.model()
    calendar, extra = scene.calendar(), scene.scaled(scene.extra)
    for after, length in itertools.product(range(SPAN + 1), range(13)):
        bound = after + length
        got = calendar.next_end(after * u, bound * u, pools, extra)
        assert scene.back(got) == model.next_end(after, bound, pools), (after, bound)


@EXHAUSTIVE
@given(scenes())
def test_peak_is_the_most_held_at_any_instant_of_the_range(scene: Scene) -> None:
    u, model = scene.unit, scene.model()
    calendar = Calendar(ListHolds(scene.scaled(scene.everything)), scene.pools)
    for pool, lo, length in itertools.product("ab", range(SPAN + 13), range(-1, 14)):
        hi = lo + length
        assert calendar.peak(pool, lo * u, hi * u) == model.peak(pool, lo, hi), (pool, lo, hi)


@EXHAUSTIVE
@given(scenes())
def test_occupancy_is_what_bookings_and_offers_hold_at_every_instant(scene: Scene) -> None:
    """``holds`` stand for bookings, ``extra`` for offers."""
    u = scene.unit
    booked, offered = Model(scene.holds, scene.pools), Model(scene.extra, scene.pools)
    bookings, offers = scene.scaled(scene.holds), scene.scaled(scene.extra)
    for pool, lo, length in itertools.product("ab", range(0, SPAN + 13, 3), range(-1, 14)):
        hi = lo + length
        steps = occupancy(bookings, offers, pool, lo * u, hi * u)
        units = [(t, b, o) for s, e, b, o in steps for t in range(scene.back(s), scene.back(e))]
        expect = [(t, booked.usage(pool, t), offered.usage(pool, t)) for t in range(lo, hi)]
        assert units == expect, (pool, lo, hi)
        assert all(a[2:] != b[2:] for a, b in itertools.pairwise(steps)), steps


@given(
    scenes(),
    needs_st,
    st.integers(1, 6),
    st.integers(0, SPAN),
    st.integers(0, SPAN),
    st.integers(0, SPAN),
)
def test_earliest_starts_after_now_and_within_the_horizon(
    scene: Scene, need: dict[str, int], duration: int, after: int, now: int, horizon: int
) -> None:
    u = scene.unit
    calendar = Calendar(ListHolds(scene.scaled(scene.everything)), scene.pools)
    got = calendar.earliest(need, duration * u, after * u, now=now * u, horizon=horizon * u)
    expected = scene.model().find(checked_need(need), max(after, now), now + horizon, duration)
    assert (None if got is None else scene.back(got)) == expected


# --- The search -------------------------------------------------------------------------


@st.composite
def refusals(draw: st.DrawFn) -> Callable[[int, int, int], bool] | None:
    """None, or a refusal that depends on the candidate, the start and the end."""
    if draw(st.booleans()):
        return None
    if draw(st.booleans()):  # slots longer than some length, from some candidates
        longer, picky = draw(st.integers(1, 8)), draw(st.sets(st.integers(0, 2)))
        return lambda i, s, e: i in picky and e - s > longer
    a, b, c = draw(st.integers(0, 5)), draw(st.integers(0, 5)), draw(st.integers(0, 5))
    modulus = draw(st.integers(2, 5))
    return lambda i, s, e: (a * s + b * e + c * i) % modulus == 0


@dataclass
class Search:
    scene: Scene
    windows: list[tuple[int, int]]
    shortest: int
    longest: int | None
    needs: list[dict[str, int]]
    limit: int
    now: int
    horizon: int
    refuse: Callable[[int, int, int], bool] | None


@st.composite
def searches(draw: st.DrawFn) -> Search:
    scene = draw(scenes())
    windows = draw(
        st.lists(
            st.tuples(st.integers(-5, SPAN), st.integers(0, 15)).map(lambda w: (w[0], w[0] + w[1])),
            min_size=1,
            max_size=3,
        )
    )
    shortest = draw(st.integers(1, 6))
    longest = draw(st.none() | st.integers(0, 6).map(lambda more: shortest + more))
    needs = draw(st.lists(needs_st, min_size=1, max_size=3))
    return Search(
        scene,
        windows,
        shortest,
        longest,
        needs,
        limit=draw(st.integers(1, 4)),
        now=draw(st.integers(0, 10)),
        horizon=draw(st.integers(0, SPAN)),
        refuse=draw(refusals()),
    )


def run_search(case: Search) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The calendar's search in model units, and the refusals it asked for."""
    scene, u = case.scene, case.scene.unit
    asked: list[tuple[int, int, int]] = []

    def refuse(i: int, s: int, e: int) -> bool:
        asked.append((i, scene.back(s), scene.back(e)))
        assert case.refuse is not None
        return case.refuse(i, scene.back(s), scene.back(e))

    calendar = Calendar(ListHolds(scene.scaled(scene.everything)), scene.pools)
    found = calendar.search(
        [(s * u, e * u) for s, e in case.windows],
        case.shortest * u,
        None if case.longest is None else case.longest * u,
        case.needs,
        limit=case.limit,
        now=case.now * u,
        horizon=case.horizon * u,
        refuse=None if case.refuse is None else refuse,
    )
    assert all(isinstance(f, Found) for f in found)
    return [(f.candidate, scene.back(f.hold.start), scene.back(f.hold.end)) for f in found], asked


SEARCH_SETTINGS = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])


@SEARCH_SETTINGS
@given(searches())
def test_search_matches_the_model_of_pairing_and_refusals(case: Search) -> None:
    scene = case.scene
    got, _ = run_search(case)
    expected = model_search(
        scene.everything,
        scene.pools,
        case.windows,
        case.shortest,
        case.shortest if case.longest is None else case.longest,
        [checked_need(n) for n in case.needs],
        case.limit,
        case.now,
        case.horizon,
        case.refuse or (lambda i, s, e: False),
        REFUSAL_STEP_US // scene.unit,
    )
    assert got == expected


@SEARCH_SETTINGS
@given(searches())
def test_every_slot_found_fits_starts_in_a_window_and_is_as_long_as_fits(case: Search) -> None:
    scene = case.scene
    got, asked = run_search(case)
    longest = case.shortest if case.longest is None else case.longest
    needs = [checked_need(n) for n in case.needs]
    model = scene.model()
    assert len(got) <= case.limit
    assert [s for _, s, _ in got] == sorted(s for _, s, _ in got)
    for i, s, e in got:
        assert case.now <= s <= case.now + case.horizon
        assert any(w_start <= s <= w_end for w_start, w_end in case.windows)
        assert case.shortest <= e - s <= longest
        assert model.fits(needs[i], s, e)
        if e - s < longest:  # a longer slot would not fit
            assert not model.fits(needs[i], s, e + 1)
        assert case.refuse is None or not case.refuse(i, s, e)
        model = Model([*model.holds, Hold(s, e, needs[i])], scene.pools)
    for i, s, _e in asked:  # only slots that fitted were offered to the refusal
        assert scene.model().fits(needs[i], s, s + case.shortest)


# --- Examples at the boundaries --------------------------------------------------------------


def test_a_hold_ending_at_t_leaves_t_free() -> None:
    calendar = Calendar(ListHolds([Hold(0, 10, {"a": 2})]), {"a": 2})
    assert calendar.find({"a": 1}, 0, 100, 5) == 10
    assert calendar.fits({"a": 2}, 10, 20)
    assert not calendar.fits({"a": 1}, 9, 20)
    assert calendar.peak("a", 10, 20) == 0
    assert calendar.peak("a", 9, 10) == 2


def test_a_window_includes_its_end_and_nothing_after() -> None:
    calendar = Calendar(ListHolds([Hold(0, 10, {"a": 1})]), {"a": 1})
    found = calendar.search([(0, 10)], 5, None, [{"a": 1}], limit=3, now=0, horizon=100)
    assert [(f.candidate, f.hold.start, f.hold.end) for f in found] == [(0, 10, 15)]
    assert calendar.search([(0, 9)], 5, None, [{"a": 1}], limit=3, now=0, horizon=100) == []


def test_the_horizon_includes_its_last_start() -> None:
    calendar = Calendar(ListHolds([]), {"a": 1})
    found = calendar.search([(0, 50)], 5, None, [{"a": 1}], limit=1, now=20, horizon=0)
    assert [(f.hold.start, f.hold.end) for f in found] == [(20, 25)]
    assert calendar.earliest({"a": 1}, 5, 21, now=20, horizon=0) is None


def test_offers_of_one_search_count_as_holds_for_the_next() -> None:
    calendar = Calendar(ListHolds([]), {"a": 3})
    found = calendar.search([(0, 0), (1, 1)], 4, None, [{"a": 2}], limit=2, now=0, horizon=9)
    assert [f.hold.start for f in found] == [0]  # 2 + 2 > 3 while the first runs


def test_a_candidate_refused_max_refusals_times_gets_nothing() -> None:
    calendar = Calendar(ListHolds([]), {"a": 1})
    calls: list[int] = []

    def refuse(times: int) -> Callable[[int, int, int], bool]:
        calls.clear()
        return lambda i, s, e: calls.append(s) is None and len(calls) <= times

    search = {"limit": 1, "now": 0, "horizon": 10**6}
    found = calendar.search([(0, 10**6)], 1, None, [{"a": 1}], **search, refuse=refuse(200))
    assert (found, len(calls)) == ([], MAX_REFUSALS)
    found = calendar.search([(0, 10**6)], 1, None, [{"a": 1}], **search, refuse=refuse(199))
    assert [f.hold.start for f in found] == [199]


def test_the_refusal_is_asked_about_the_slot_as_long_as_it_fits() -> None:
    calendar = Calendar(ListHolds([Hold(6, 20, {"a": 1})]), {"a": 1})
    asked: list[tuple[int, int, int]] = []

    def refuse(i: int, s: int, e: int) -> bool:
        asked.append((i, s, e))
        return False

    calendar.search([(0, 0)], 4, 8, [{"a": 1}], limit=1, now=0, horizon=9, refuse=refuse)
    assert asked == [(0, 0, 6)]


def test_after_a_refusal_the_search_moves_on_by_at_most_the_refusal_step() -> None:
    calendar = Calendar(ListHolds([]), {"a": 1})
    tried: list[int] = []

    def refuse(i: int, s: int, e: int) -> bool:
        tried.append(s)
        return s < H_US  # a maintenance hour

    found = calendar.search(
        [(0, 2 * H_US)],
        4 * H_US,
        None,
        [{"a": 1}],
        limit=1,
        now=0,
        horizon=10 * H_US,
        refuse=refuse,
    )
    assert tried == [0, REFUSAL_STEP_US, 2 * REFUSAL_STEP_US, 3 * REFUSAL_STEP_US, H_US]
    assert [f.hold.start for f in found] == [H_US]


def test_after_a_refusal_the_search_tries_the_next_hold_end_if_sooner() -> None:
    calendar = Calendar(ListHolds([Hold(0, 7, {"a": 1})]), {"a": 2})
    tried: list[int] = []

    def refuse(i: int, s: int, e: int) -> bool:
        tried.append(s)
        return s == 0

    found = calendar.search(
        [(0, 100)], 50, None, [{"a": 1}], limit=1, now=0, horizon=100, refuse=refuse
    )
    assert tried == [0, 7]
    assert [f.hold.start for f in found] == [7]


# --- Arguments ----------------------------------------------------------------------------


def test_checked_need_drops_zeros_and_refuses_negatives() -> None:
    assert checked_need({"a": 0, "b": 2}) == {"b": 2}
    with pytest.raises(ValueError, match="negative need -1 for pool 'a'"):
        checked_need({"a": -1})


def test_checked_pools_refuses_a_negative_capacity() -> None:
    assert checked_pools({"a": 0, "b": 2}) == {"a": 0, "b": 2}
    with pytest.raises(ValueError, match="negative pool capacity"):
        Calendar(ListHolds([]), {"a": -1})


def test_durations_must_be_positive_and_ordered() -> None:
    calendar = Calendar(ListHolds([]), {"a": 1})
    search = {"limit": 1, "now": 0, "horizon": 10}
    with pytest.raises(ValueError, match="min_duration must be positive"):
        calendar.search([(0, 1)], 0, None, [{"a": 1}], **search)
    with pytest.raises(ValueError, match="max_duration is shorter than min_duration"):
        calendar.search([(0, 1)], 2, 1, [{"a": 1}], **search)
    with pytest.raises(ValueError, match="negative need"):
        calendar.search([(0, 1)], 1, None, [{"a": -1}], **search)
    with pytest.raises(ValueError, match="duration must be positive"):
        calendar.earliest({"a": 1}, 0, 0, now=0, horizon=10)


def test_a_pool_the_site_lacks_fits_nowhere_but_zero_of_it_is_ignored() -> None:
    calendar = Calendar(ListHolds([]), {"a": 1})
    assert calendar.find(checked_need({"c": 1}), 0, 100, 1) is None
    assert calendar.find(checked_need({"c": 0, "a": 1}), 0, 100, 1) == 0
