"""What the sandbox saw: accepted calls, status counts, accepted items and relay delivery ids.

Why: tests and `relay run --events N` prove the relay's claims (every event delivered, nothing
delivered twice, limits respected) by asking the sandbox, not the relay. Bodies stay in memory only;
nothing here is logged, because bodies carry personal data.

Duplicate accounting: in sandbox mode the relay puts `"_relay_ids": [delivery id per item]` at the
top of each JSON body. An id counts as accepted when its item was accepted: the emulator returns one
flag per item, and ids line up with items by position (Braze: attributes, then events, then
purchases). If the id list and the item list differ in length, the ids count only when every item
was accepted (and the mismatch is counted), so a partial failure never inflates the counts.
`duplicates` is the number of ids accepted more than once.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from typing import Any


class Recorder:
    def __init__(self, max_calls: int = 200_000) -> None:
        self.max_calls = max_calls
        self.reset()

    def reset(self) -> None:
        self.calls: deque[dict[str, Any]] = deque(maxlen=self.max_calls)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.items: dict[str, Counter[str]] = defaultdict(Counter)
        self.ids: dict[str, Counter[str]] = defaultdict(Counter)
        self.mismatches: Counter[str] = Counter()

    def status(self, destination: str, status: int | str) -> None:
        self.statuses[destination][str(status)] += 1

    def accept(
        self,
        destination: str,
        endpoint: str,
        method: str,
        path: str,
        status: int,
        body: Any,
        relay_ids: list[str] | None,
        flags: list[bool] | None,
        count_items: bool,
    ) -> None:
        """Record an accepted (2xx) call and account for its items and relay ids."""
        self.calls.append({
            "destination": destination, "endpoint": endpoint, "method": method, "path": path,
            "status": status, "body": body, "relay_ids": relay_ids, "at": time.time(),
        })
        self.items[destination]["calls"] += 1
        if not count_items:
            return
        flags = [True] if flags is None else flags
        self.items[destination]["accepted"] += sum(flags)
        self.items[destination]["rejected"] += len(flags) - sum(flags)
        if not relay_ids:
            return
        if len(relay_ids) == len(flags):
            chosen = [rid for rid, ok in zip(relay_ids, flags) if ok]
        elif len(flags) == 1 or all(flags):
            chosen = list(relay_ids) if all(flags) else []
            if len(flags) != 1:
                self.mismatches[destination] += 1
        else:
            self.mismatches[destination] += 1
            chosen = []
        self.ids[destination].update(chosen)

    def list(self, destination: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.calls if destination is None or c["destination"] == destination]

    def accepted_ids(self) -> dict[str, int]:
        merged: Counter[str] = Counter()
        for counter in self.ids.values():
            merged.update(counter)
        return dict(merged)

    def summary(self, destination: str) -> dict[str, Any]:
        ids = self.ids.get(destination, Counter())
        items = self.items.get(destination, Counter())
        return {
            "requests": dict(self.statuses.get(destination, {})),
            "accepted_calls": items.get("calls", 0),
            "accepted_items": items.get("accepted", 0),
            "rejected_items": items.get("rejected", 0),
            "relay_ids": len(ids),
            "duplicates": sum(1 for n in ids.values() if n > 1),
            "relay_id_mismatches": self.mismatches.get(destination, 0),
        }
