"""The sinks' write-ahead: which deliveries are being sent, one ledger entry per source partition.

Before a sink sends a batch it records, durably, the deliveries it is about to send; a worker
killed mid-request leaves them recorded, and when their events are consumed again after the
restart they go to an operator (`ambiguous_after_crash`) instead of messaging a customer twice.

One entry per (topic, partition) of a batch lists its deliveries, and is overwritten by that
partition's next batch, instead of one `sending` entry per delivery: half the ledger's
changelog records. An entry lists only deliveries without a ledger status of their own, so any
status they have later is their outcome; one that has a status already (in the retry lane,
or ambiguous and re-driven) is marked `sending` in its own entry instead, as before. The
entry is written in its partition's event context, so it lands in the same changelog partition
as the deliveries' own outcomes, after those of the batch before.

Overwriting is safe once every delivery the entry lists has an outcome in the ledger. A sink
knows that for the entries it wrote itself and settled (`settled`); for any other entry (written
before a crash, by another worker before a rebalance, or left by an exception half-way) the
deliveries still without an outcome are first given a `sending` entry of their own.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

SENDING = "sending"
PREFIX = "sending|"  # delivery ids are "<destination>:<action>:<event id>": no clash


def intent_key(topic: str, partition: int) -> str:
    return f"{PREFIX}{topic}|{partition}"


class Intents:
    """Reads and writes the per-partition entries of one sink's ledger."""

    def __init__(self, ledger: MutableMapping, put: Callable[[str, Any], Any] | None = None):
        self.ledger = ledger
        self.put = put or ledger.__setitem__  # how a mark is written (the sink waits for it)
        writer = uuid.uuid4().hex[:12]  # once: a generator's expression runs per item
        self._stamps = (f"{writer}:{n}" for n in itertools.count())
        self._settled: dict[str, str] = {}  # key -> stamp of our entry whose deliveries all ended

    def in_flight(self, key: str) -> frozenset[str]:
        """Deliveries the entry at `key` lists that may still lack an outcome."""
        entry = self.ledger.get(key)
        if not entry or entry.get("w") == self._settled.get(key):
            return frozenset()
        return frozenset(entry.get("ids") or ())

    def write(self, key: str, ids: list[str], before: Iterable[str] = ()) -> str:
        """Record `ids` as being sent. `before` is what `in_flight(key)` returned: those of them
        not in `ids` and still without an outcome keep their mark in an entry of their own."""
        now = time.time()
        if before:
            sending = set(ids)
            for delivery_id in before:
                if delivery_id not in sending and self.ledger.get(delivery_id) is None:
                    self.put(delivery_id, {"status": SENDING, "at": now})
        stamp = next(self._stamps)
        self.put(key, {"ids": ids, "w": stamp, "at": now})
        return stamp

    def settled(self, key: str, stamp: str) -> None:
        """Every delivery of the entry written with `stamp` now has an outcome in the ledger."""
        self._settled[key] = stamp
