"""Sliding-window rate limits and rate observation for the emulators.

Why a sliding *log* rather than a token bucket: the vendors state their limits as "N requests per
W seconds" (Braze 3,000 per 3 s, Insider 25,000 per minute), and a log answers exactly that
question, both for enforcing (429 once N calls were admitted in the last W seconds) and for
observing (the largest number of arrivals seen in any W-second window), which is what the stats
compare against the documented limit to show whether the relay respected it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass


class RateLimited(Exception):
    """Raised by `Limiter.take`; the server turns it into the destination's 429 reply."""

    def __init__(self, state: LimitState) -> None:
        super().__init__(state.bucket)
        self.state = state


@dataclass(frozen=True)
class LimitState:
    """What the rate-limit headers report after a call drew from a bucket."""

    bucket: str
    limit: int
    remaining: int
    reset_s: float  # seconds until a slot frees up
    window_s: float

    @property
    def reset_epoch(self) -> int:
        return int(time.time() + self.reset_s + 0.999)


class Window:
    """Timestamps of events inside the last `window_s` seconds (monotonic clock)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque()

    def prune(self, now: float) -> None:
        edge = now - self.window_s
        times = self.times
        while times and times[0] <= edge:
            times.popleft()


class Limiter:
    """Per-bucket enforcement: bucket name -> (limit, window), limits scaled by `rate_scale`.

    Only admitted calls occupy the window, so a client hammering a full bucket is refused but is
    not locked out for longer than the window itself."""

    def __init__(self, rate_scale: float = 1.0) -> None:
        self.rate_scale = rate_scale
        self.specs: dict[str, tuple[int, float]] = {}
        self.windows: dict[str, Window] = {}

    def define(self, bucket: str, limit: int, window_s: float) -> None:
        scaled = max(1, round(limit * self.rate_scale))
        self.specs[bucket] = (scaled, window_s)
        self.windows[bucket] = Window(window_s)

    def take(self, bucket: str, now: float | None = None) -> LimitState:
        limit, window_s = self.specs[bucket]
        win = self.windows[bucket]
        now = time.monotonic() if now is None else now
        win.prune(now)
        used = len(win.times)
        if used >= limit:
            reset = win.times[0] + window_s - now if win.times else window_s
            raise RateLimited(LimitState(bucket, limit, 0, max(reset, 0.0), window_s))
        win.times.append(now)
        reset = win.times[0] + window_s - now
        return LimitState(bucket, limit, limit - used - 1, max(reset, 0.0), window_s)


class Observer:
    """Largest number of arrivals seen in any window, per name (endpoint or bucket).

    Arrivals are counted before auth, faults or limits, because the point is to measure what the
    client sent, including calls the emulator then refused."""

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}
        self.max_seen: dict[str, int] = {}
        self.limits: dict[str, int | None] = {}

    def define(self, name: str, window_s: float, limit: int | None) -> None:
        if name not in self.windows:
            self.windows[name] = Window(window_s)
            self.max_seen[name] = 0
            self.limits[name] = limit

    def arrive(self, name: str, now: float | None = None) -> None:
        win = self.windows.get(name)
        if win is None:
            return
        now = time.monotonic() if now is None else now
        win.prune(now)
        win.times.append(now)
        self.max_seen[name] = max(self.max_seen[name], len(win.times))

    def report(self, names: list[str]) -> dict[str, dict]:
        out = {}
        for name in names:
            win = self.windows.get(name)
            if win is None:
                continue
            limit = self.limits[name]
            seen = self.max_seen[name]
            out[name] = {
                "window_s": win.window_s,
                "limit": limit,
                "max_observed": seen,
                "limit_per_s": None if limit is None else round(limit / win.window_s, 3),
                "max_per_s": round(seen / win.window_s, 3),
                "exceeded": limit is not None and seen > limit,
            }
        return out

    def reset(self) -> None:
        for name, win in self.windows.items():
            win.times.clear()
            self.max_seen[name] = 0
