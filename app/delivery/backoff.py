"""Exponential back-off with full jitter (AWS architecture blog), capped."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): uniform in [0, min(cap, base * 2**attempt)]."""
    rng = rng or random
    return rng.uniform(0.0, min(cap_s, base_s * (2 ** attempt)))
