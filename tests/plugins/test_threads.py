"""The daemon threads that run plain hooks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait
from typing import Any

from ep_server.plugins.threads import DaemonPool


def _blocked(gate: threading.Event, started: threading.Semaphore) -> str:
    started.release()
    gate.wait(10)
    return threading.current_thread().name


def _until_idle(pool: DaemonPool) -> None:
    """Until no thread is in a call (the thread that ran the last one is
    idle again: it says so under the same lock)."""
    for _ in range(500):
        if not pool.running():
            return
        time.sleep(0.01)
    raise AssertionError(f"still running: {pool.running()}")


def test_a_thread_done_with_its_call_takes_the_next_one():
    pool = DaemonPool(4, "t")
    try:
        for i in range(20):  # one after another: one thread does them all
            job: Future[Any] = Future()
            pool.run(job, lambda n: n * 2, i)
            assert job.result(5) == 2 * i
            _until_idle(pool)
        assert [t.name for t in pool._threads] == ["t-0"]
    finally:
        pool.shutdown(1)


def test_calls_at_once_start_threads_up_to_the_size_and_queue_beyond():
    pool = DaemonPool(3, "t")
    gate, started = threading.Event(), threading.Semaphore(0)
    jobs: list[Future[Any]] = [Future() for _ in range(5)]
    try:
        for job in jobs:
            pool.run(job, _blocked, gate, started)
        for _ in range(3):
            assert started.acquire(timeout=5)
        assert not started.acquire(timeout=0.1)  # the other two wait in the queue
        assert len(pool._threads) == 3
        assert pool.running() == ["t-0", "t-1", "t-2"]
        gate.set()
        done, _ = wait(jobs, timeout=5)
        assert len(done) == 5
        assert len(pool._threads) == 3
    finally:
        gate.set()
        pool.shutdown(1)


def test_a_cancelled_call_frees_its_thread_for_the_next():
    pool = DaemonPool(1, "t")
    gate, started = threading.Event(), threading.Semaphore(0)
    first: Future[Any] = Future()
    queued: Future[Any] = Future()
    try:
        pool.run(first, _blocked, gate, started)
        assert started.acquire(timeout=5)
        pool.run(queued, _blocked, gate, started)
        assert queued.cancel()  # still queued: it never runs
        gate.set()
        assert first.result(5) == "t-0"
        after: Future[Any] = Future()
        pool.run(after, lambda: "ran")
        assert after.result(5) == "ran"
        assert len(pool._threads) == 1
        assert pool.running() == []
    finally:
        gate.set()
        pool.shutdown(1)
