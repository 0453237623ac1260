"""A token bucket shared by every concurrent request a worker makes to one endpoint group.

Set from the documented limits, so the relay itself never causes a 429 at those limits; a 429
that still arrives (other senders share the limit) is handled by the retry path.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float | None = None):
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_s
        # A burst of one second's worth (at least one) keeps short-term rates within the limit.
        self.capacity = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, tokens: float = 1.0) -> float:
        """Wait until `tokens` are available; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            self._refill()
            while self._tokens < tokens:
                delay = (tokens - self._tokens) / self.rate
                await asyncio.sleep(delay)
                waited += delay
                self._refill()
            self._tokens -= tokens
        self.waited_s += waited
        return waited

    def penalize(self, seconds: float) -> None:
        """A destination told us to back off: drain the bucket for that long."""
        self._tokens = min(self._tokens, -seconds * self.rate)
