"""A token-bucket rate limit per caller, with a bounded memory.

Each key (an identity's subject, or an anonymous caller's address) has a
bucket of ``burst`` tokens refilled at ``rate`` per second; a call takes one.
At most ``max_keys`` buckets are kept: the least recently used is forgotten
first, which at worst hands a long-idle caller a full bucket again. So many
distinct callers cannot grow the server's memory without bound.

The server keeps two: one on ``Ask`` per identity, and one on failed
authentications per client address (see :mod:`ep_server.pipeline`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``take(key)`` returns 0 when the call may proceed, else the seconds
    until it could."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token for ``key``; 0.0 if granted, else the wait."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def wait(self, key: str) -> float:
        """The seconds until ``key`` could take a token (0.0: it could now),
        taking none. A key found with its bucket full again is forgotten
        (others stay until pushed out by newer keys, see ``max_keys``)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens, last = bucket
        tokens = min(self.burst, tokens + (self.clock() - last) * self.rate)
        if tokens >= self.burst:
            del self._buckets[key]
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)
