"""Accounting from `relay.outcomes`: has every ingress record reached an end?

An ingress record (its origin, `topic/partition/offset`) is accounted for when it was
dead-lettered at ingress, or normalized into envelopes that were all routed, and every delivery
they planned reached a terminal outcome (delivered, skipped, unreachable, dead-lettered, skipped as a
duplicate, suppressed by consent or caps, or deferred to the end of quiet hours). Outcome
records may arrive in any order; each carries a batch of outcomes (`outcomes_in`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# `deferred` is accounted: the message is durably scheduled (deliveries.deferred) until the
# customer's quiet hours end, which may be hours after a run.
FINAL = {"delivered", "skipped", "unreachable", "dead_lettered", "duplicate_skipped", "suppressed",
         "deferred"}


def outcomes_in(record: Any) -> list[Mapping[str, Any]]:
    """The outcomes one relay.outcomes record carries. Workers write `{"batch": [outcome, ...]}`;
    a bare outcome (written by workers before batching, still in the topic's retention) is a
    batch of one. Anything else carries none."""
    if not isinstance(record, Mapping):
        return []
    batch = record.get("batch")
    if batch is None:
        return [record] if "stage" in record else []
    return [o for o in batch if isinstance(o, Mapping)] if isinstance(batch, list) else []


@dataclass
class Tracker:
    expected: set[str] = field(default_factory=set)
    ingress: dict[str, Any] = field(default_factory=dict)  # origin -> "dlq" | [event ids]
    routed: dict[str, list[list[str]]] = field(default_factory=dict)  # event id -> deliveries
    final: dict[str, str] = field(default_factory=dict)  # delivery id -> final status
    retrying: set[str] = field(default_factory=set)
    per_destination: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    ingress_dlq: int = 0
    ingress_reasons: Counter = field(default_factory=Counter)

    def expect(self, origins: Iterable[str]) -> None:
        self.expected.update(origins)

    def add(self, record: Any) -> None:
        """Take in one relay.outcomes record (a batch of outcomes, or a single one)."""
        for outcome in outcomes_in(record):
            self._add_one(outcome)

    def _add_one(self, record: Mapping[str, Any]) -> None:
        stage, status = record.get("stage"), record.get("status")
        if stage == "ingress":
            if status == "dead_lettered":
                self.ingress[record["origin"]] = "dlq"
                self.ingress_dlq += 1
                self.ingress_reasons[record.get("reason", "")] += 1
            else:
                self.ingress[record["origin"]] = list(record.get("event_ids") or [])
        elif stage == "route":
            deliveries = record.get("deliveries") or []
            self.routed[record["event_id"]] = deliveries
            for dest, _action, _id in deliveries:
                self.per_destination[dest]["sent"] += 1
        elif stage == "deliver":
            dest, delivery_id = record.get("destination", ""), record.get("delivery_id", "")
            if status == "retrying":
                if delivery_id not in self.retrying:
                    self.per_destination[dest]["retried"] += 1
                self.retrying.add(delivery_id)
            elif status in FINAL and delivery_id not in self.final:
                self.final[delivery_id] = status
                self.retrying.discard(delivery_id)
                self.per_destination[dest][status] += 1

    def complete(self, origin: str) -> bool:
        state = self.ingress.get(origin)
        if state is None:
            return False
        if state == "dlq":
            return True
        for event_id in state:
            deliveries = self.routed.get(event_id)
            if deliveries is None:
                return False
            if any(d[2] not in self.final for d in deliveries):
                return False
        return True

    def unaccounted(self) -> list[str]:
        return sorted(o for o in self.expected if not self.complete(o))

    @property
    def done(self) -> bool:
        return all(self.complete(o) for o in self.expected)

    def summary_rows(self) -> list[dict[str, Any]]:
        rows = []
        for dest in sorted(self.per_destination):
            c = self.per_destination[dest]
            rows.append({
                "destination": dest, "sent": c["sent"], "delivered": c["delivered"],
                "skipped": c["skipped"] + c["duplicate_skipped"], "unreachable": c["unreachable"],
                "dead_lettered": c["dead_lettered"], "suppressed": c["suppressed"],
                "deferred": c["deferred"], "retried": c["retried"],
                "in_flight": c["sent"] - sum(c[s] for s in FINAL),
            })
        return rows
