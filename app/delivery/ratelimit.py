"""A sliding-window limiter shared by every concurrent request a worker makes to one endpoint.

Set from the documented limits so the relay itself never causes a 429 at them. A token bucket
is not enough: with a burst of one second's worth it lets through up to twice the limit in some
one-second window, which a destination counting per window rejects. This limiter admits a request
only if fewer than `limit` requests are in flight or were answered in the last `window_s`.

A request counts from its answer (`release`), not from its departure, because a destination
counts arrivals, and an arrival lies somewhere between the two. Counted from departures, with a
margin for arrivals that bunch, a busy client still went over: requests that left on time sat
in its event loop and arrived together (Attentive's unsubscribe endpoint saw 6 in one second
against 5 in `relay chaos`). Counted from answers, no window of the destination's can hold more
than `limit` arrivals, however late the requests arrive: tests/unit/test_delivery_parts.py
checks it with arrivals drawn at random between departure and answer. The price is the
round trip: a slot is held for the request's latency plus the window.

A 429 that still arrives (other senders share the limit) is handled by the retry path and
drains the window for the time the destination asks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque


class TokenBucket:
    """`rate_per_s` requests per second, counted over every sliding `window_s` from each
    request's answer; every `acquire` must be followed by a `release`."""

    def __init__(self, rate_per_s: float, window_s: float = 1.0):
        self.window_s = window_s
        self.rescale(rate_per_s)
        self._answered: deque[float] = deque()  # when requests were released, oldest first
        self.in_flight = 0
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._blocked_until = 0.0
        self.waited_s = 0.0

    def rescale(self, rate_per_s: float) -> None:
        """Admit `rate_per_s` from now on (what was admitted stays in the window)."""
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        window_s = self.window_s
        self.rate = rate_per_s
        # Below one request per window, one request per 1/rate.
        self.window = window_s if rate_per_s * window_s >= 1 else 1.0 / rate_per_s
        self.limit = max(1, math.floor(rate_per_s * window_s))

    async def acquire(self) -> float:
        """Wait until one more request fits the window; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = time.monotonic()
                answered = self._answered
                while answered and now - answered[0] >= self.window:
                    answered.popleft()
                delay = self._blocked_until - now
                if self.in_flight + len(answered) >= self.limit:
                    # Requests in flight only ever join the window later than its oldest answer.
                    delay = max(delay, self.window - (now - answered[0]) if answered
                                else math.inf)
                if delay <= 0:
                    break
                self._released.clear()
                if delay == math.inf:
                    await self._released.wait()  # the whole window is in flight
                else:
                    await asyncio.sleep(delay)
                waited += time.monotonic() - now
            self.in_flight += 1
        self.waited_s += waited
        return waited

    def release(self) -> None:
        """The request `acquire` admitted has its answer, or has failed: it counts from now,
        the latest it can have reached the destination."""
        self.in_flight = max(0, self.in_flight - 1)
        self._answered.append(time.monotonic())
        self._released.set()

    def penalize(self, seconds: float) -> None:
        """A destination told us to back off: admit nothing for that long."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
