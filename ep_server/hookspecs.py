"""The hooks an EP plugin implements: the whole plugin API in one module.

A plugin is any importable object (usually a module) named in the
``ep_server`` entry-point group, whose functions carry the
:data:`ep_server.hookimpl` marker. Each hook below is called on **each
plugin separately**, with that plugin's own configuration, never broadcast:

1. at start-up, :func:`ep_configure` validates the plugin's section of the
   config file and returns the plugin's configuration object;
2. at start-up, :func:`ep_claims` says which task types the plugin claims;
3. for each ``Ask``, :func:`ep_policy` is called on every plugin that
   implements it (site-wide policy, any task type); if none refuses,
   :func:`ep_evaluate` is called on the plugins that claim the asked task
   type, and only on those.

For "when can I run this?" (an ``Ask`` with a schedule), plugins that offered
may also say what the task holds (:func:`ep_resources`), refuse a slot
(:func:`ep_slot`), and hear of bookings (:func:`ep_booked`,
:func:`ep_cancelled`).

Implementations may take any subset of a hook's arguments, by name (pluggy's
"opt-in arguments"), so hooks can gain arguments without breaking plugins.
Every hook is optional except :func:`ep_evaluate`, which a plugin that claims
anything must implement.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ep_server.model import Booking, Claim, HostInfo, Reason, Slot, TaskQuery, Verdict

PROJECT_NAME = "ep_server"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def ep_configure(settings: Mapping[str, Any], host: HostInfo) -> Any:
    """Validate this plugin's configuration and return it.

    Called once at start-up, before :func:`ep_claims`.

    :param settings: this plugin's section of the EP config file (the table
        ``[plugin.<name>]``, with ``EP_PLUGIN__<NAME>__<KEY>`` environment
        overrides applied), or an empty mapping when there is none.
    :param host: the host's capacity, as detected or overridden in the config.
    :returns: the plugin's configuration object, of any type; the EP passes it
        back as ``config`` to the other hooks. ``None`` is allowed.
    :raises ep_server.PluginConfigError: (or ``pydantic.ValidationError``)
        when the settings are invalid. Start-up then stops with a message
        naming the plugin and the key. Any other exception marks the plugin as
        failed; the EP starts without it.
    """


@hookspec
def ep_claims(config: Any, host: HostInfo) -> Iterable[Claim]:
    """Return the task types this plugin claims.

    Called once at start-up. Several plugins may claim the same task type;
    each ``Ask`` consults every plugin that claims its task type and merges
    their offers.

    :param config: what this plugin's :func:`ep_configure` returned (``None``
        if it has none).
    :param host: the host's capacity.
    :returns: the claims, each a task-type URI with the service-type URIs the
        plugin may offer for it (listed by ``GetServiceInfo``).
    """


@hookspec
def ep_evaluate(query: TaskQuery, config: Any, host: HostInfo) -> Verdict | Awaitable[Verdict]:
    """Decide whether this host can perform ``query``.

    Called for each ``Ask`` whose task type this plugin claims. Decide from
    the taskinfo, the resources asked for, the host and the site's policy;
    return :meth:`Verdict.yes` with offers or :meth:`Verdict.no` with
    reasons.

    The implementation may be a coroutine function (``async def``): it then
    runs on the server's event loop, in a task of its own (its timeouts and
    task groups are its own business), and is cancelled at the deadline.
    Keep it free of blocking calls. A plain function runs in a worker thread,
    so it may block (read a socket, run a command); at the deadline the EP
    stops waiting for it, and one plugin may hold at most half the worker
    threads, counting the calls of all its hooks (beyond that its calls get
    ``PLUGIN_BUSY`` at once). Pure, quick checks are fastest as ``async def``.

    A plugin that raises, returns something other than a :class:`Verdict`,
    or runs past the per-plugin deadline does not fail the ``Ask``: it adds a
    reason (``PLUGIN_ERROR`` or ``PLUGIN_TIMEOUT``) and the other plugins'
    offers are still returned.

    :param query: the task type, taskinfo (plain Python values) and resources
        asked for. Treat it as read-only: other plugins see the same object.
    :param config: what this plugin's :func:`ep_configure` returned.
    :param host: the host's capacity.
    :returns: the plugin's verdict.
    """


@hookspec
def ep_policy(
    query: TaskQuery, config: Any, host: HostInfo
) -> Reason | Iterable[Reason] | Awaitable[Reason | Iterable[Reason] | None] | None:
    """Refuse a request by site policy, whatever its task type.

    Called for each ``Ask`` on every plugin that implements it, before any
    plugin evaluates the task. Decide from ``query.identity`` (its
    ``subject``, ``groups``, ``claims``), the task type and the taskinfo; for
    example, allow docker tasks only to members of a group, or only images
    from an allow-list. If any policy refuses, the answer is NO with the
    refusals' reasons and no plugin evaluates the task.

    Policies run at once, before any evaluation and under the same deadline
    as it, as :func:`ep_evaluate` does: ``async def`` in a task of its own,
    a plain function in a worker thread. A policy that raises or runs past
    the deadline refuses (fail closed) with a ``PLUGIN_ERROR`` or
    ``PLUGIN_TIMEOUT`` reason.

    :param query: the request, with the caller's identity.
    :param config: what this plugin's :func:`ep_configure` returned.
    :param host: the host's capacity.
    :returns: ``None`` to allow, or one or more reasons to refuse (give them
        ``cause=Cause.POLICY``).
    """


@hookspec
def ep_resources(query: TaskQuery, config: Any, host: HostInfo) -> Mapping[str, int] | None:
    """Say what the task holds from the site's pools while offered or booked.

    Called when this plugin made an offer for an ``Ask`` with a schedule,
    before slots are searched. Read it from the taskinfo (a cluster's node
    count, a notebook's GPU) and the resources asked for. It may be
    ``async``; a plain function runs in a worker thread. All offering
    plugins are asked at once under the plugin deadline; one that fails or
    runs late gets the default.

    :param query: the request.
    :param config: what this plugin's :func:`ep_configure` returned.
    :param host: the host's capacity.
    :returns: pool name (``"cores"``, ``"memory"`` in bytes, or any pool the
        site configures, such as ``"gpus"``) to amount; missing pools hold 0.
        ``None`` takes the default: the request's minimum cores (at least 1)
        and minimum memory.
    """


@hookspec
def ep_slot(query: TaskQuery, slot: Slot, config: Any) -> Reason | None:
    """Refuse a time slot the scheduler found for this plugin's offer.

    For example, a maintenance window, or a service that only runs at night.
    Called while the ledger's search waits (a SQLite ledger holds its lock
    meanwhile; a PostgreSQL ledger searches outside any lock), from a worker
    thread: it must be a plain, quick, thread-safe function (not ``async``)
    that does no I/O. A plugin that raises refuses the slot. One Ask waits for ``ep_slot``
    calls at most ``[plugins] deadline`` seconds in all, shared equally by
    the plugins that implement it; a plugin past its share has the rest of
    its slots for that Ask refused. A call still running then is left to
    finish, and its plugin's slots are refused, uncalled, until it returns
    (and for 30 seconds more if it took longer than the whole deadline).

    :param query: the request.
    :param slot: the candidate slot, ``[slot.start, slot.end)`` in UTC.
    :param config: what this plugin's :func:`ep_configure` returned.
    :returns: a reason to refuse the slot, or ``None`` to accept it.
    """


@hookspec
def ep_booked(booking: Booking, config: Any) -> Awaitable[None] | None:
    """Hear that an offer of this plugin's was booked: prepare the service.

    Called after the booking is committed; the caller already has its
    answer. It may be ``async``; a plain function runs in a worker thread.
    Errors are logged and never undo the booking. Called at least once per
    booking: after an EP process dies, a booking it made in its last moments
    may be announced again by another process, so make it idempotent (keyed
    by ``booking.id``); see ``[schedule] announce_retry_after``.

    :param booking: the new booking (slot, hold, owner, serviceinfo).
    :param config: what this plugin's :func:`ep_configure` returned.
    :returns: nothing.
    """


@hookspec
def ep_cancelled(booking: Booking, config: Any) -> Awaitable[None] | None:
    """Hear that a booking of this plugin's was cancelled: release the service.

    Called after the cancellation is committed, as :func:`ep_booked` is (at
    least once), and only after :func:`ep_booked` of the same booking has
    returned (or run past the deadline); a cancellation whose booking is
    not yet recorded as announced waits for the sweep (up to ``[schedule]
    announce_retry_after``), which announces both in order.

    :param booking: the cancelled booking.
    :param config: what this plugin's :func:`ep_configure` returned.
    :returns: nothing.
    """
