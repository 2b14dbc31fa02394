from __future__ import annotations

import pytest

from ep_server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)


def test_callers_have_their_own_buckets():
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_a_refused_call_takes_nothing():
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.take("a")
    for _ in range(100):  # hammering while refused does not push the wait out
        assert limiter.take("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.take("a") == 0.0


def test_the_bucket_refills_no_higher_than_the_burst():
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=2, clock=clock)
    clock.now += 3600
    assert [limiter.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_memory_is_bounded():
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock(), max_keys=100)
    for i in range(10_000):
        limiter.take(f"caller-{i}")
    assert len(limiter) == 100


def test_nonsense_is_refused():
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate=0, burst=1)


def test_wait_takes_nothing_and_forgets_a_refilled_bucket():
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    assert limiter.wait("a") == 0.0
    assert len(limiter) == 0  # unknown: nothing kept
    limiter.take("a")
    limiter.take("a")
    for _ in range(10):  # looking does not take
        assert limiter.wait("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.wait("a") == 0.0
    assert len(limiter) == 1  # one token back, not yet full: still kept
    clock.now += 1.0
    assert limiter.wait("a") == 0.0
    assert len(limiter) == 0  # full again: forgotten
