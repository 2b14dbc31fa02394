"""The worker threads that run plain (blocking) hooks."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["DaemonPool"]


class DaemonPool:
    """A fixed-size pool of daemon threads that run calls and settle their
    futures.

    Not ``concurrent.futures.ThreadPoolExecutor``: its threads are not
    daemons, and the interpreter joins them at exit, so a plugin stuck in a
    call would keep a stopped server alive forever. A stuck call here is
    abandoned at exit instead. Threads start as calls need them.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._queue: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._queue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads done with a call and not yet given another
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._closed = False

    def run(self, job: Future[Any], function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)``; its result or exception settles ``job``."""
        with self._lock:
            if self._closed:
                job.cancel()
                return
            self._queue.put((job, function, args))
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        name = threading.current_thread().name
        while (item := self._queue.get()) is not None:
            job, function, args = item
            running = job.set_running_or_notify_cancel()
            try:
                if running:
                    with self._lock:
                        self._busy.add(name)
                    try:
                        job.set_result(function(*args))
                    except BaseException as exc:  # the plugin's own SystemExit too
                        job.set_exception(exc)
            finally:
                with self._lock:
                    self._busy.discard(name)
                    self._idle += 1

    def running(self) -> list[str]:
        """The names of the threads running a call now."""
        with self._lock:
            return sorted(self._busy)

    def shutdown(self, wait: float) -> None:
        """Cancel queued calls; let the threads end, waiting ``wait`` seconds
        for those still in a call."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        end = time.monotonic() + wait
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
