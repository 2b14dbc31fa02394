"""A pool's occupancy as a picture and as a table: pure functions from its
steps (:class:`~ep_server.schedule.ledger.OccupancyStep`) to SVG and to
per-day figures, for the operator's page (:mod:`ep_server.http.page`).

The picture is an ``<svg>`` as wide as the page and a fixed height: the
plot is an inner ``<svg>`` whose coordinates stretch to fit
(``preserveAspectRatio="none"``, strokes that do not scale), and the labels
sit at percentages of the width in the outer one, so that they keep their
size on a phone and on a desktop. Booked amounts are drawn from the
bottom, offered ones stacked on them, against a line at the pool's
capacity; a line marks each midnight (UTC), labelled with its day. No
style attributes: the page's style sheet colours the classes, so that its
Content-Security-Policy needs no ``'unsafe-inline'``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from ep_server.schedule.ledger import OccupancyStep

__all__ = ["DaySummary", "day_spans", "days", "midnights", "timeline_svg"]

#: The plot's own coordinates: time across, amount up.
_WIDTH, _HEIGHT = 10_000, 1_000
#: The picture's height in CSS pixels, and where the plot lies in it.
_PICTURE, _TOP, _PLOT = 172, 20, 124
#: Room above the capacity line, as a share of the capacity.
_HEADROOM = 1.12
#: A day's label needs a stretch at least this share of the width.
_LABEL_ROOM = 0.09
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DaySummary:
    """One UTC day (the part of it in the stretch shown): the most booked
    and the most offered at any instant of it, and the least left free."""

    day: datetime
    booked: int
    offered: int
    free: int


def midnights(start: datetime, end: datetime) -> list[datetime]:
    """The UTC midnights in ``(start, end)``."""
    out = []
    midnight = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + _DAY
    while midnight < end:
        out.append(midnight)
        midnight += _DAY
    return out


def day_spans(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at each UTC midnight."""
    return list(itertools.pairwise([start, *midnights(start, end), end]))


def days(
    steps: Sequence[OccupancyStep], capacity: int, start: datetime, end: datetime
) -> list[DaySummary]:
    """Per UTC day of ``[start, end)``, what :class:`DaySummary` says."""
    out = []
    for lo, hi in day_spans(start, end):
        nothing = OccupancyStep(lo, hi, 0, 0)
        within = [s for s in steps if s.start < hi and s.end > lo] or [nothing]
        out.append(
            DaySummary(
                day=lo,
                booked=max(s.booked for s in within),
                offered=max(s.offered for s in within),
                free=min(capacity - s.booked - s.offered for s in within),
            )
        )
    return out


def timeline_svg(
    steps: Sequence[OccupancyStep],
    capacity: int,
    start: datetime,
    end: datetime,
    *,
    title: str,
    title_id: str,
    amount: Callable[[int], str] = str,
) -> str:
    """The picture of one pool's ``steps`` over ``[start, end)``; ``title``
    (plain text) is its accessible name, under the id ``title_id``."""
    span = (end - start).total_seconds() or 1.0
    top = max([capacity, *(s.booked + s.offered for s in steps), 1]) * _HEADROOM

    def x(when: datetime) -> float:
        return round(min(max((when - start).total_seconds() / span, 0.0), 1.0) * _WIDTH, 1)

    def y(held: int) -> float:
        return round(_HEIGHT - held / top * _HEIGHT, 1)

    plot = [
        *(_vline(x(m), "midnight") for m in midnights(start, end)),
        _area(steps, x, y, lambda s: 0, lambda s: s.booked, "booked"),
        _area(steps, x, y, lambda s: s.booked, lambda s: s.booked + s.offered, "offered"),
        f'<line class="capacity" x1="0" x2="{_WIDTH}" y1="{y(capacity)}" y2="{y(capacity)}"'
        ' vector-effect="non-scaling-stroke"/>',
    ]
    cap_y = _TOP + (y(capacity) / _HEIGHT) * _PLOT
    labels = [
        f'<text class="label" x="4" y="{cap_y - 4:.1f}">capacity {escape(amount(capacity))}</text>',
        *_day_labels(start, end, x),
    ]
    return (
        f'<svg class="timeline" width="100%" height="{_PICTURE}" role="img"'
        f' aria-labelledby="{escape(title_id)}" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{escape(title_id)}">{escape(title)}</title>'
        f'<svg x="0" y="{_TOP}" width="100%" height="{_PLOT}"'
        f' viewBox="0 0 {_WIDTH} {_HEIGHT}" preserveAspectRatio="none">'
        f'<rect class="plot" x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}"/>'
        f"{''.join(p for p in plot if p)}</svg>"
        # Spaces, which SVG does not draw, part the labels for a browser
        # that shows them as text (a terminal's).
        f" {' '.join(labels)} </svg>"
    )


def _area(
    steps: Sequence[OccupancyStep],
    x: Callable[[datetime], float],
    y: Callable[[int], float],
    low: Callable[[OccupancyStep], int],
    high: Callable[[OccupancyStep], int],
    css: str,
) -> str:
    """The band between ``low`` and ``high`` of every step, as one path
    (none when it is empty everywhere)."""
    if not any(high(s) > low(s) for s in steps):
        return ""
    upper = " ".join(f"L{x(s.start)} {y(high(s))} L{x(s.end)} {y(high(s))}" for s in steps)
    lower = " ".join(f"L{x(s.end)} {y(low(s))} L{x(s.start)} {y(low(s))}" for s in reversed(steps))
    return (
        f'<path class="{css}" d="M{x(steps[0].start)} {y(low(steps[0]))} {upper} {lower} Z"'
        ' shape-rendering="crispEdges"/>'
    )


def _vline(at: float, css: str) -> str:
    return (
        f'<line class="{css}" x1="{at}" x2="{at}" y1="0" y2="{_HEIGHT}"'
        ' vector-effect="non-scaling-stroke"/>'
    )


def _day_labels(start: datetime, end: datetime, x: Callable[[datetime], float]) -> list[str]:
    """A label per UTC day ("Tue 4"), centred in its stretch; none for a
    part of a day too narrow to hold one."""
    out = []
    for lo, hi in day_spans(start, end):
        if x(hi) - x(lo) >= _LABEL_ROOM * _WIDTH:
            middle = (x(lo) + x(hi)) / 2 / _WIDTH * 100
            out.append(
                f'<text class="label day" x="{middle:.2f}%" y="{_TOP + _PLOT + 16}"'
                f' text-anchor="middle">{_day(lo)}</text>'
            )
    return out


def _day(when: datetime) -> str:
    return f"{when:%a} {when.day}"
