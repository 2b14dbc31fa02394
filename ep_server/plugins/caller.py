"""Calling plugins: the one way every hook is called while serving.

Given hook implementations (:class:`~ep_server.plugins.registry.Impl`), their
arguments and a deadline, the :class:`PluginCaller`

- runs an ``async`` hook in a task of its own (so its own timeouts, task
  groups and cancellations stay its own), cancelled at the deadline;
- runs a plain hook in one shared pool of worker threads, in the calling
  context (the request id reaches the plugin's log lines); at the deadline
  the caller stops waiting, and the thread stays the plugin's until its call
  returns;
- and turns what happened into one :class:`Outcome`: the value, checked
  against the hook's contract, or why there is none (it raised, ran late,
  returned something malformed, or its plugin was busy).

Fairness is by plugin: one plugin may hold at most half of the threads (its
*share*), counting calls of every hook, queued, running, and those the caller
stopped waiting for; past that, its calls are BUSY at once, so a stuck plugin
cannot starve the others. What differs by hook is data in
:data:`~ep_server.plugins.contract.HOOKS` (``one_late_call``, ``cooldown``).

The threads are daemon threads (see :class:`~ep_server.plugins.threads.DaemonPool`):
a plugin stuck in a call can never keep a stopped server from exiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import enum
import functools
import logging
import sys
import threading
import time
import types
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, cast

from ep_server.plugins.contract import Malformed
from ep_server.plugins.registry import Impl
from ep_server.plugins.threads import DaemonPool

__all__ = ["Outcome", "PluginCaller", "Status"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_NO_KWARGS: Mapping[str, Any] = types.MappingProxyType({})


class Status(enum.Enum):
    """How one call of a hook ended."""

    #: It returned a value that meets the hook's contract.
    OK = "ok"
    #: It raised (or, being async, cancelled itself).
    RAISED = "raised"
    #: It did not finish by the deadline.
    LATE = "late"
    #: It returned something the hook's contract does not allow.
    MALFORMED = "malformed"
    #: It was not called: its plugin holds its share of the threads, or the
    #: hook is barred on it for now (a late call still running, a cooldown).
    BUSY = "busy"


class Outcome(NamedTuple, Generic[T]):
    """What one call of one plugin's hook came to (a named tuple: one is
    made for every call, and a tuple is the cheapest immutable record)."""

    plugin: str
    status: Status
    #: The checked result when OK, else None.
    value: T | None = None
    #: Why there is no value, in words fit for a reason's message.
    problem: str = ""
    #: Seconds from the start of the call to its end (or to the deadline).
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the hook returned a value that meets its contract."""
        return self.status is Status.OK


class PluginCaller:
    """Calls hooks under deadlines; one per server.

    :param threads: worker threads shared by all plain hooks.
    :param deadline: the configured plugin deadline (``[plugins] deadline``):
        what a timed-out call is said to have missed, and what a call must
        exceed to trip a hook's cooldown.
    """

    def __init__(self, threads: int = 8, deadline: float = 2.0) -> None:
        self.deadline = deadline
        self._workers = DaemonPool(threads, "ep-plugin")
        self._share = max(1, threads // 2)
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # plugin -> threads it holds
        self._late: dict[tuple[str, str], int] = {}  # (plugin, hook) -> calls past deadline
        self._cool: dict[tuple[str, str], float] = {}  # (plugin, hook) -> refused until

    # --- from the event loop ----------------------------------------------

    async def gather(
        self, impls: Sequence[Impl[P, T]], until: float, *args: P.args, **kwargs: P.kwargs
    ) -> list[Outcome[T]]:
        """Call every one of ``impls`` with ``args`` at once; wait until all
        are done or the event loop's clock reaches ``until``. If the wait
        itself is cancelled (the caller left), the calls are cancelled too."""
        return await self.gather_on(asyncio.get_running_loop(), impls, until, args, kwargs)

    async def gather_on(
        self,
        loop: asyncio.AbstractEventLoop,
        impls: Sequence[Impl[..., T]],
        until: float,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] = _NO_KWARGS,
    ) -> list[Outcome[T]]:
        """:meth:`gather` on ``loop``, the running loop, which the caller
        already holds (each ``asyncio.get_running_loop()`` is a system call
        on Python 3.11).

        An async hook's task takes its first step on the loop's next turn;
        most hooks answer in that step. So when there are tasks, the wait
        starts with one turn of the loop, and only calls still running
        after it are waited for under a timer at ``until``: a query whose
        plugins answer without waiting costs no timer, no waiter and no
        callbacks."""
        started = time.perf_counter()
        count = len(impls)
        outcomes: list[Outcome[T] | None] = [None] * count
        calls: list[asyncio.Future[Any] | _Job | None] = [None] * count
        unstarted = False  # a task waits for the loop's next turn to start
        # When each eagerly started task (Python 3.12+) that answered in its
        # first step ended: before the plugins started after it ran.
        ends: list[float] | None = None
        for i, impl in enumerate(impls):
            try:
                if impl.is_async:
                    coro = impl.function(*args, **kwargs) if kwargs else impl.function(*args)
                    task, lazy = _task(coro, loop)
                    calls[i] = task
                    if lazy:
                        unstarted = True
                    elif task.done():
                        if ends is None:
                            ends = [0.0] * count
                        ends[i] = time.perf_counter()
                else:
                    calls[i] = self._submit(impl, args, kwargs)
            except _Busy as busy:
                outcomes[i] = Outcome(impl.plugin, Status.BUSY, problem=str(busy))
            except Exception as exc:  # the call itself raised (a plain function marked async)
                outcomes[i] = self._raised(impl, exc, 0.0)
        if unstarted:
            try:
                await _turn()
            except asyncio.CancelledError:
                _cancel(calls)
                raise
        turned = time.perf_counter()
        wait: _Wait | None = None
        for call in calls:
            if call is not None and not call.done():
                if wait is None:
                    wait = _Wait(loop)
                wait.add(call)
        if wait is not None:
            await wait.until(until)
        for i, call in enumerate(calls):
            if call is not None:
                if ends is not None and ends[i]:
                    ended = ends[i]
                else:
                    ended = turned if wait is None else wait.ended(call, turned)
                outcomes[i] = self._settle(impls[i], call, ended - started)
        return outcomes  # type: ignore[return-value]  # every slot is filled above

    def _settle(
        self, impl: Impl[..., T], call: asyncio.Future[Any] | _Job, seconds: float
    ) -> Outcome[T]:
        if not call.done():
            call.cancel()  # a task is cancelled; a queued call too
            if isinstance(call, _Job):  # a running call is left to finish in its thread
                self._mark_late(call)
            return self._late_outcome(impl, seconds)
        if call.cancelled():
            return self._raised(
                impl, asyncio.CancelledError("the plugin cancelled itself"), seconds
            )
        error = call.exception()
        if error is not None:
            return self._raised(impl, error, seconds)
        return self._checked(impl, call.result(), seconds)

    # --- from another thread -----------------------------------------------

    def call_blocking(
        self, impl: Impl[P, T], timeout: float, *args: P.args, **kwargs: P.kwargs
    ) -> Outcome[T]:
        """Call a plain hook from a thread that is not the event loop's (the
        ledger's), waiting at most ``timeout`` seconds."""
        if impl.is_async:
            problem = f"{impl.hook} must be a plain function, not async"
            log.error("plugin %s: %s", impl.plugin, problem)
            return Outcome(impl.plugin, Status.RAISED, problem=problem)
        started = time.perf_counter()
        try:
            job = self._submit(impl, args, kwargs)
        except _Busy as busy:
            return Outcome(impl.plugin, Status.BUSY, problem=str(busy))
        concurrent.futures.wait([job], timeout=max(0.0, timeout))
        seconds = time.perf_counter() - started
        if not job.done():
            job.cancel()  # a queued call never starts
            self._mark_late(job)  # a running one is left to finish
            return self._late_outcome(impl, seconds)
        error = job.exception()
        if error is not None:
            return self._raised(impl, error, seconds)
        return self._checked(impl, job.result(), seconds)

    # --- the threads and what each plugin holds ------------------------------

    def _submit(
        self, impl: Impl[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> _Job:
        """Start a plain call in a worker thread, unless its plugin is busy."""
        key = (impl.plugin, impl.hook)
        with self._lock:
            held = self._held.get(impl.plugin, 0)
            if held >= self._share:
                raise _Busy(f"{held} earlier calls of this plugin still hold worker threads")
            if impl.contract.one_late_call and self._late.get(key):
                raise _Busy(f"an earlier {impl.hook} call of this plugin is still running")
            cool = self._cool.get(key)
            if cool is not None and time.monotonic() < cool:
                raise _Busy(f"{impl.hook} of this plugin is refused for a while after a slow call")
            self._held[impl.plugin] = held + 1
        job = _Job(impl)
        job.add_done_callback(self._returned)
        function = functools.partial(impl.function, **kwargs) if kwargs else impl.function
        context = contextvars.copy_context()
        self._workers.run(job, context.run, job.call, function, *args)
        return job

    def _returned(self, future: concurrent.futures.Future[Any]) -> None:
        """A plain call ended (or was cancelled before it started): its plugin
        gets its thread back, and a slow call may trip the hook's cooldown."""
        job = cast(_Job, future)
        impl = job.impl
        key = (impl.plugin, impl.hook)
        with self._lock:
            self._held[impl.plugin] -= 1
            if job.late:
                self._late[key] -= 1
            cooldown = impl.contract.cooldown
            if cooldown and job.took > self.deadline:
                self._cool[key] = time.monotonic() + cooldown
        if cooldown and job.took > self.deadline:
            log.warning(
                "plugin %s: %s took %.3gs, past the deadline (%.3gs); it is refused for %gs",
                impl.plugin, impl.hook, job.took, self.deadline, cooldown,
            )  # fmt: skip

    def _mark_late(self, job: _Job) -> None:
        """The caller stopped waiting for a call still running in its thread."""
        with self._lock:
            if not job.done():  # else _returned has run, or will find late unset
                job.late = True
                key = (job.impl.plugin, job.impl.hook)
                self._late[key] = self._late.get(key, 0) + 1

    def _late_outcome(self, impl: Impl[P, T], seconds: float) -> Outcome[T]:
        log.warning("plugin %s: %s ran past the deadline", impl.plugin, impl.hook)
        return Outcome(
            impl.plugin,
            Status.LATE,
            problem=f"plugin did not answer within the deadline ({self.deadline:.3g}s)",
            seconds=seconds,
        )

    def _raised(self, impl: Impl[P, T], error: BaseException, seconds: float) -> Outcome[T]:
        log.error("plugin %s: %s raised", impl.plugin, impl.hook, exc_info=error)
        problem = f"{type(error).__name__}: {error}"
        return Outcome(impl.plugin, Status.RAISED, problem=problem, seconds=seconds)

    def _checked(self, impl: Impl[P, T], value: object, seconds: float) -> Outcome[T]:
        try:
            checked = impl.contract.check(value, impl.plugin)
        except Malformed as exc:
            log.error("plugin %s: %s", impl.plugin, exc)
            return Outcome(impl.plugin, Status.MALFORMED, problem=str(exc), seconds=seconds)
        return Outcome(impl.plugin, Status.OK, checked, seconds=seconds)

    def busy_threads(self) -> int:
        """Threads held by plugin calls now, those left running included."""
        with self._lock:
            return sum(self._held.values())

    def close(self, wait: float = 1.0) -> None:
        """Cancel queued calls, give running ones ``wait`` seconds, and
        leave any still running behind (their threads are daemons)."""
        self._workers.shutdown(wait)
        stuck = self._workers.running()
        if stuck:
            log.warning(
                "%d plugin thread(s) still running (%s); exiting without them",
                len(stuck), ", ".join(stuck[:5]),
            )  # fmt: skip


class _Busy(Exception):
    """The plugin cannot be called now; the message says why."""


class _Job(concurrent.futures.Future[Any]):
    """One plain call: a future that knows its hook implementation, whether
    the caller stopped waiting for it, and how long it ran."""

    def __init__(self, impl: Impl[..., Any]) -> None:
        super().__init__()
        self.impl = impl
        self.late = False
        self.took = 0.0

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``, noting how long it took (in the worker thread)."""
        started = time.monotonic()
        try:
            return function(*args)
        finally:
            self.took = time.monotonic() - started


if sys.version_info >= (3, 12):

    def _task(coro: Any, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[Any], bool]:
        """A task of its own for an async hook, whose first step runs now
        (Python 3.12 eager start): a plugin that answers without waiting
        costs no trip through the event loop, and one that waits still has
        its own task, so its timeouts and cancellations stay its own. True
        with the task when its first step waits for the loop's next turn."""
        if loop.get_task_factory() is not None:  # someone's own tasks: theirs to make
            return loop.create_task(coro), True
        return asyncio.Task(coro, loop=loop, eager_start=True), False  # type: ignore[call-arg,unused-ignore]

else:

    def _task(coro: Any, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[Any], bool]:
        """A task of its own for an async hook (Python 3.11 has no eager
        start: its first step waits for the next turn of the event loop)."""
        return loop.create_task(coro), True


@types.coroutine
def _turn() -> Generator[None, None, None]:
    """Let the event loop take one turn (what ``asyncio.sleep(0)`` does):
    the tasks made before it take their first step first."""
    yield


def _cancel(calls: Sequence[asyncio.Future[Any] | _Job | None]) -> None:
    for call in calls:
        if call is not None:
            call.cancel()


class _Wait:
    """The wait for the calls still running after the loop's turn: until
    the last one ends, or the loop's clock reaches the deadline, noting when
    each one ended (a plain call, in its worker thread). If the wait itself
    is cancelled, the calls are cancelled too."""

    __slots__ = ("_ends", "_left", "_loop", "_waiter", "_woke")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] = loop.create_future()
        self._left = 0
        #: Call -> when it ended; -1.0 while it runs.
        self._ends: dict[asyncio.Future[Any] | _Job, float] = {}
        self._woke = 0.0

    def add(self, call: asyncio.Future[Any] | _Job) -> None:
        self._ends[call] = -1.0
        self._left += 1
        if isinstance(call, _Job):
            call.add_done_callback(self._job_ended)
        else:
            call.add_done_callback(self._task_ended)

    async def until(self, deadline: float) -> None:
        timer = self._loop.call_at(deadline, self._wake)
        try:
            await self._waiter
        except asyncio.CancelledError:
            for call in self._ends:
                call.cancel()
            raise
        finally:
            timer.cancel()
            self._woke = time.perf_counter()

    def ended(self, call: asyncio.Future[Any] | _Job, otherwise: float) -> float:
        """When ``call`` ended: ``otherwise`` if it was not waited for, the
        end of the wait if it was still running then."""
        ended = self._ends.get(call)
        if ended is None:
            return otherwise
        return self._woke if ended < 0 else ended

    def _task_ended(self, task: asyncio.Future[Any]) -> None:
        self._ended(task, time.perf_counter())

    def _job_ended(self, job: concurrent.futures.Future[Any]) -> None:
        """In the worker thread (or at once, in the loop's, when the call
        had already ended): hand the end over to the loop."""
        ended = time.perf_counter()
        # The loop may close between the check and the call (a server
        # stopping while a plain call runs on): nobody waits for it then.
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ended, cast(_Job, job), ended)

    def _ended(self, call: asyncio.Future[Any] | _Job, when: float) -> None:
        if self._ends.get(call) == -1.0:
            self._ends[call] = when
            self._left -= 1
            if not self._left:
                self._wake()

    def _wake(self) -> None:
        if not self._waiter.done():
            self._waiter.set_result(None)
