"""Fault injection: make a destination fail on purpose, reproducibly.

Why: the relay's retry, back-off, retry-topic and dead-letter paths only run when a destination
misbehaves, and real vendors do not misbehave on demand. A plan per destination (or "*" for all)
says how often calls fail, with which statuses, how often they hang, how much latency to add and
whether the destination is in an outage. Randomness comes from a generator seeded
with the sandbox's seed and used for nothing else, so a run with the same seed and the same call
order fails the same calls.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultPlan:
    error_rate: float = 0.0
    statuses: list[int] = field(default_factory=lambda: [500])
    timeout_rate: float = 0.0
    latency_ms: float = 0.0  # added before the call is acted on, even if the client has left
    outage_s: float = 0.0
    timeout_s: float = 30.0  # how long a "timed out" call hangs before the sandbox answers 504
    outage_until: float = 0.0  # monotonic deadline derived from outage_s

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["outage_remaining_s"] = round(max(0.0, self.outage_until - time.monotonic()), 3)
        del data["outage_until"]
        return data


@dataclass(frozen=True)
class Fault:
    """The decision for one call: add latency, then maybe fail with `status` or hang."""

    latency_s: float = 0.0
    status: int = 0  # 0 = no failure
    hang_s: float = 0.0  # > 0: a time-out


def parse_plan(data: dict[str, Any]) -> tuple[str, FaultPlan]:
    """Validate a POST /_sandbox/faults body; raises ValueError with a short reason."""
    dest = data.get("destination", "*")
    if not isinstance(dest, str) or not dest:
        raise ValueError("destination must be a destination name or '*'")
    plan = FaultPlan()
    for key in ("error_rate", "timeout_rate"):
        value = data.get(key, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"{key} must be a number between 0 and 1")
        setattr(plan, key, float(value))
    for key in ("latency_ms", "outage_s", "timeout_s"):
        value = data.get(key, getattr(plan, key))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a non-negative number")
        setattr(plan, key, float(value))
    statuses = data.get("statuses", [500])
    if (not isinstance(statuses, list) or not statuses
            or not all(isinstance(s, int) and 400 <= s <= 599 for s in statuses)):
        raise ValueError("statuses must be a non-empty list of 4xx/5xx codes")
    plan.statuses = list(statuses)
    if plan.error_rate + plan.timeout_rate > 1:
        raise ValueError("error_rate + timeout_rate must not exceed 1")
    plan.outage_until = time.monotonic() + plan.outage_s if plan.outage_s else 0.0
    return dest, plan


class Faults:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.plans: dict[str, FaultPlan] = {}

    def set(self, destination: str, plan: FaultPlan) -> None:
        self.plans[destination] = plan

    def clear(self) -> None:
        self.plans.clear()

    def public(self) -> dict[str, Any]:
        return {dest: plan.public() for dest, plan in self.plans.items()}

    def decide(self, destination: str) -> Fault | None:
        """A destination-specific plan wins over "*"; no plan means no fault."""
        plan = self.plans.get(destination) or self.plans.get("*")
        if plan is None:
            return None
        latency = plan.latency_ms / 1000.0
        if plan.outage_until and time.monotonic() < plan.outage_until:
            return Fault(latency, 503)
        roll = self.rng.random()
        if roll < plan.timeout_rate:
            return Fault(latency, 504, plan.timeout_s)
        if roll < plan.timeout_rate + plan.error_rate:
            return Fault(latency, self.rng.choice(plan.statuses))
        return Fault(latency) if latency else None
