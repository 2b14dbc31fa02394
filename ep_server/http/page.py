"""The operator's page, ``GET /``: the site at a glance.

What it shows: the server's version; each plugin (state, distribution and
version, task types, service types, and why a failed one failed); the
host's capacity; the booking pools, and, for a site that books, each
pool's occupancy over the coming days, as a picture
(:mod:`ep_server.http.timeline`) and as a table per day.

It is one self-contained HTML document: no script, no external resource,
one inline style sheet (allowed by its hash in the Content-Security-Policy),
headings, definition lists and tables, so that it reads the same in a
terminal browser, and fits a phone's width. Everything shown is
HTML-escaped (plugins' names, versions and errors come from third parties).

Anyone who may see the page sees amounts only: the view holds no owner and
no booking or offer id, since :meth:`~ep_server.schedule.bookings.Bookings.occupancy`
gives none.

:func:`page_view` builds the plain :class:`PageView` from the service info
(in the plain JSON form of :func:`~ep_server.wire.plain_json.plain_json`)
and the occupancy; :func:`render_page` draws it; :func:`page_handler` is
the aiohttp handler that does both for a running servicer.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ep_server.client.render import format_bytes
from ep_server.http.timeline import days, timeline_svg
from ep_server.schedule.bookings import Bookings, Occupancy
from ep_server.schedule.ledger import LedgerUnavailable, OccupancyStep
from ep_server.wire.plain_json import plain_json

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "DAYS",
    "HEADERS",
    "HostView",
    "PageView",
    "PluginView",
    "PoolView",
    "Site",
    "page_handler",
    "page_view",
    "render_page",
]

#: How many days ahead the occupancy is shown.
DAYS = 7

_STYLE = """
:root { color-scheme: light dark; --fg: #1a202c; --bg: #fff; --muted: #4a5568;
  --line: #cbd5e0; --plot: #f7fafc; --booked: #2b6cb0; --offered: #90cdf4;
  --capacity: #c53030; --ok: #276749 }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e2e8f0; --bg: #171923; --muted: #a0aec0; --line: #4a5568;
    --plot: #1f2533; --booked: #63b3ed; --offered: #2c5282; --capacity: #fc8181;
    --ok: #68d391 } }
* { box-sizing: border-box }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--fg);
  background: var(--bg) }
header, main { max-width: 60rem; margin: 0 auto; padding: 0 1rem }
h1 { font-size: 1.5rem; margin: 1rem 0 .25rem }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line) }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .25rem; overflow-wrap: anywhere }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .1rem 1rem;
  margin: .25rem 0 }
dt { color: var(--muted) }
dd { margin: 0; overflow-wrap: anywhere }
dd ul { list-style: none; margin: 0; padding: 0 }
code, pre { font-family: ui-monospace, monospace; font-size: .9em }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; padding: .25rem .5rem;
  background: var(--plot); border-left: 3px solid var(--capacity) }
.state { font-size: .8rem; font-weight: normal; padding: 0 .4em; border: 1px solid;
  border-radius: .3em; white-space: nowrap }
.state-loaded { color: var(--ok) }
.state-failed, .state-blocked { color: var(--capacity) }
p.note { color: var(--muted) }
figure { margin: 1rem 0 2rem }
figcaption h3 { margin: 0 }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .25rem 1.25rem }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .4em;
  vertical-align: -.1em }
.swatch.booked { background: var(--booked) }
.swatch.offered { background: var(--offered) }
.swatch.capacity { height: 0; border-top: 2px dashed var(--capacity); vertical-align: .3em }
svg.timeline { display: block; font: 12px system-ui, sans-serif; margin: .25rem 0 }
svg .plot { fill: var(--plot) }
svg .booked { fill: var(--booked) }
svg .offered { fill: var(--offered) }
svg .capacity { stroke: var(--capacity); stroke-width: 2; stroke-dasharray: 6 3 }
svg .midnight { stroke: var(--line); stroke-width: 1 }
svg .label { fill: var(--muted) }
table { border-collapse: collapse; width: 100%; max-width: 36rem;
  font-variant-numeric: tabular-nums }
caption { text-align: left; color: var(--muted); font-size: .9rem }
th, td { padding: .1rem .5rem; text-align: right; border-bottom: 1px solid var(--line) }
th:first-child, td:first-child { text-align: left; padding-left: 0 }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

#: The headers of every answer: never cached (occupancy changes), and a
#: policy that lets the page load nothing but its own style sheet.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- The view: plain data ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginView:
    """One plugin as the page shows it; ``state`` is ``LOADED``,
    ``FAILED`` or ``BLOCKED``."""

    name: str
    distribution: str
    version: str
    state: str
    error: str
    tasktypes: tuple[str, ...]
    servicetypes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostView:
    """The host's capacity: cores, memory in bytes, architecture, os."""

    cores: int
    memory: int
    architecture: str
    os: str


@dataclass(frozen=True, slots=True)
class PoolView:
    """A booking pool: its capacity, and what is held of it over the
    page's stretch of time (no steps when that is not known)."""

    name: str
    capacity: int
    steps: tuple[OccupancyStep, ...] = ()


@dataclass(frozen=True, slots=True)
class PageView:
    """Everything the page shows, and nothing else: amounts, never whose."""

    version: str
    plugins: tuple[PluginView, ...]
    host: HostView
    pools: tuple[PoolView, ...]
    #: Whether the site takes bookings.
    books: bool = False
    #: The stretch of time the occupancy covers, when it was read.
    span: tuple[datetime, datetime] | None = None
    #: Why the occupancy is not shown although the site books.
    problem: str = ""
    #: False when the site describes itself (version, plugins, host) only
    #: to callers with credentials (``GetServiceInfo`` is not anonymous):
    #: the page, which anyone may load, then shows the occupancy alone.
    described: bool = True


def page_view(
    info: Mapping[str, Any], occupancy: Occupancy | None, *, books: bool, problem: str = ""
) -> PageView:
    """The view of a site described by ``info`` (``GetServiceInfo``'s
    answer in :func:`~ep_server.wire.plain_json.plain_json`'s form, where
    fields at their default value are left out), with its pools'
    ``occupancy`` when it was read; ``books`` says whether the site takes
    bookings, and ``problem`` why a booking site's occupancy is missing."""
    host = info.get("capacity", {})
    occupied = {} if occupancy is None else occupancy.pools
    return PageView(
        version=info.get("server_version", ""),
        plugins=tuple(_plugin(p) for p in info.get("plugins", ())),
        host=HostView(
            cores=int(host.get("cores", 0)),
            memory=int(host.get("memory", 0)),
            architecture=host.get("architecture", ""),
            os=host.get("os", ""),
        ),
        pools=tuple(
            PoolView(name, int(capacity), tuple(occupied.get(name, ())))
            for name, capacity in sorted(info.get("pools", {}).items())
        ),
        books=books,
        span=None if occupancy is None else (occupancy.start, occupancy.end),
        problem=problem,
    )


def _plugin(p: Mapping[str, Any]) -> PluginView:
    return PluginView(
        name=p.get("name", ""),
        distribution=p.get("distribution", ""),
        version=p.get("version", ""),
        state=p.get("state", "UNSPECIFIED"),
        error=p.get("error", ""),
        tasktypes=tuple(p.get("tasktypes", ())),
        servicetypes=tuple(p.get("servicetypes", ())),
    )


# --- Rendering ---------------------------------------------------------------------------


def render_page(view: PageView) -> str:
    """The whole HTML document for ``view``."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>ExecutionPlanner: the site at a glance</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{_server(view)}\n<main>\n{_described(view)}\n"
        f"{_pools(view)}\n</main>\n</body>\n</html>\n"
    )


def _described(view: PageView) -> str:
    if view.described:
        return f"{_plugins(view.plugins)}\n{_host(view.host)}"
    return (
        "<section>\n<h2>This site</h2>\n<p>This site describes its server, plugins and "
        "host to callers with credentials only (<code>GetServiceInfo</code> is not "
        "anonymous here): ask it with <code>ep info</code> and a token.</p>\n</section>"
    )


def _server(view: PageView) -> str:
    when = "" if view.span is None else f"<dt>As of</dt><dd>{_time(view.span[0])}</dd>"
    version = (
        f"<dt>Server version</dt><dd>ep-server {escape(view.version)}</dd>"
        if view.described
        else ""
    )
    return f"<header>\n<h1>ExecutionPlanner</h1>\n<dl>{version}{when}</dl>\n</header>"


def _plugins(plugins: tuple[PluginView, ...]) -> str:
    if not plugins:
        return "<section>\n<h2>Plugins</h2>\n<p>No plugins are installed.</p>\n</section>"
    return "<section>\n<h2>Plugins</h2>\n" + "\n".join(map(_plugin_html, plugins)) + "\n</section>"


def _plugin_html(p: PluginView) -> str:
    state = escape(p.state.lower())
    rows = [("Distribution", escape(f"{p.distribution} {p.version}".strip()) or "unknown")]
    rows.append(("Task types", _codes(p.tasktypes)))
    rows.append(("Service types", _codes(p.servicetypes)))
    if p.error:
        rows.append(("Error", f"<pre>{escape(p.error)}</pre>"))
    elif p.state == "BLOCKED":
        rows.append(("Blocked", "by this site's configuration"))
    return (
        f'<h3>{escape(p.name)} <span class="state state-{state}">{state}</span></h3>\n{_dl(rows)}'
    )


def _host(host: HostView) -> str:
    rows = [
        ("Cores", str(host.cores)),
        ("Memory", escape(format_bytes(host.memory))),
        ("Architecture", escape(host.architecture) or "unknown"),
        ("Operating system", escape(host.os) or "unknown"),
    ]
    return f"<section>\n<h2>Host</h2>\n{_dl(rows)}\n</section>"


def _pools(view: PageView) -> str:
    head = "<section>\n<h2>Bookings</h2>\n"
    if not view.books:
        return (
            f"{head}<p>This site takes no bookings: it answers whether a task can run,"
            " and offers no time slots.</p>\n</section>"
        )
    capacities = _dl([(escape(p.name), escape(_amount(p.name, p.capacity))) for p in view.pools])
    parts = [head, "<h3>Pools</h3>\n", capacities, "\n"]
    if view.span is None:
        parts.append(f'<p class="note">{escape(view.problem or "No occupancy to show.")}</p>\n')
    else:
        parts.append(_occupancy(view.pools, *view.span))
    return "".join(parts) + "</section>"


def _occupancy(pools: tuple[PoolView, ...], start: datetime, end: datetime) -> str:
    count = round((end - start).total_seconds() / 86_400)
    parts = [
        f"<p>What bookings and offers not yet accepted hold of each pool over the coming"
        f" {count} day{'' if count == 1 else 's'}, from {_time(start)} to {_time(end)};"
        " days in UTC.</p>\n",
        '<ul class="legend"><li><span class="swatch booked"></span>booked</li>'
        '<li><span class="swatch offered"></span>offered</li>'
        '<li><span class="swatch capacity"></span>capacity</li></ul>\n',
    ]
    parts.extend(_pool_figure(n, pool, start, end) for n, pool in enumerate(pools))
    return "".join(parts)


def _pool_figure(n: int, pool: PoolView, start: datetime, end: datetime) -> str:
    def amount(held: int) -> str:
        return _amount(pool.name, held)

    summary = days(pool.steps, pool.capacity, start, end)
    most_booked = max((d.booked for d in summary), default=0)
    most_offered = max((d.offered for d in summary), default=0)
    title = (
        f"{pool.name}: at most {amount(most_booked)} booked and {amount(most_offered)} offered"
        f" of {amount(pool.capacity)}"
    )
    svg = timeline_svg(
        pool.steps, pool.capacity, start, end, title=title, title_id=f"pool-{n}", amount=amount
    )
    rows = "".join(
        f"<tr><th scope=row>{_date(d.day)}</th><td>{escape(amount(d.booked))}</td>"
        f"<td>{escape(amount(d.offered))}</td><td>{escape(amount(d.free))}</td></tr>"
        for d in summary
    )
    return (
        f"<figure>\n<figcaption><h3>{escape(pool.name)}</h3></figcaption>\n{svg}\n"
        f"<table><caption>{escape(pool.name)} per day: the most booked, the most offered,"
        " the least free</caption>\n<thead><tr><th scope=col>Day</th><th scope=col>Booked</th>"
        "<th scope=col>Offered</th><th scope=col>Free</th></tr></thead>\n"
        f"<tbody>{rows}</tbody></table>\n</figure>\n"
    )


def _dl(rows: list[tuple[str, str]]) -> str:
    """A definition list of (term, description) rows, both already HTML."""
    return "<dl>" + "".join(f"<dt>{t}</dt><dd>{d}</dd>" for t, d in rows) + "</dl>"


def _codes(values: tuple[str, ...]) -> str:
    if not values:
        return "none"
    return "<ul>" + "".join(f"<li><code>{escape(v)}</code></li>" for v in values) + "</ul>"


def _amount(pool: str, held: int) -> str:
    """An amount of ``pool``: bytes for memory, a number otherwise."""
    return format_bytes(held) if pool == "memory" else f"{held:,}"


def _time(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _date(when: datetime) -> str:
    """``Tue 4 Mar``."""
    when = when.astimezone(UTC)
    return f"{when:%a} {when.day} {when:%b}"


# --- The handler -------------------------------------------------------------------------


class Site(Protocol):
    """What the page reads of a running EP; its
    :class:`~ep_server.servicer.ExecutionPlannerServicer` is one."""

    @property
    def info(self) -> Message:
        """``GetServiceInfo``'s answer, which never changes while it runs."""
        ...

    @property
    def bookings(self) -> Bookings | None:
        """Its bookings, when it takes bookings."""
        ...


def page_handler(
    site: Site,
    *,
    describe: bool = True,
    fresh_for: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler of ``GET /`` for ``site`` (the servicer). When the
    booking ledger cannot be reached, the page says so in place of the
    occupancy.

    Anyone may load the page, so the occupancy read for one load serves
    the loads of the next ``fresh_for`` seconds, and loads that arrive
    while it is read wait for that read: however often the page is
    loaded, the ledger is read at most once per ``fresh_for`` seconds.

    ``describe`` false (``GetServiceInfo`` needs credentials on this site)
    leaves the server's version, the plugins and the host off the page: the
    page is for anyone, and shows no more than an anonymous caller may ask.
    """
    info = plain_json(site.info)
    if not describe:  # only what the pools' pictures need
        info = {"pools": info.get("pools", {})}
    lock = asyncio.Lock()
    last: list[tuple[float, Occupancy | None, str]] = []

    async def current() -> tuple[Occupancy | None, str]:
        bookings = site.bookings
        if bookings is None:
            return None, ""
        async with lock:
            if last and clock() - last[0][0] < fresh_for:
                return last[0][1], last[0][2]
            occupancy, problem = None, ""
            try:
                occupancy = await bookings.occupancy(DAYS)
            except LedgerUnavailable:
                problem = "The booking ledger cannot be reached now: no occupancy to show."
            last[:] = [(clock(), occupancy, problem)]
            return occupancy, problem

    async def page(request: web.Request) -> web.Response:
        occupancy, problem = await current()
        view = page_view(info, occupancy, books=site.bookings is not None, problem=problem)
        if not describe:
            view = dataclasses.replace(view, described=False)
        return web.Response(
            text=render_page(view), content_type="text/html", charset="utf-8", headers=HEADERS
        )

    return page
