"""The identity shortcut: ingress resolves an envelope's profile itself when this worker owns the
envelope's partition of `events.normalized`, instead of sending it there for the identity agent.

That hop cost a produce, a fetch, a Faust consume and a JSON round trip per event, and about
35-40 ms of latency on the embedded broker (BENCHMARKS.md). Skipping it is safe because the
`identities` table is partitioned like `events.normalized`: when this worker's identity agent
owns partition p, ingress reads exactly the index entries that agent would read, and runs the
same code (`app.agents.identity`).

What it must not do is overtake an envelope of the same customer key that went through the topic.
So a partition opens only once the identity agent has processed a record at or past every
envelope ingress sent to it, with none of them still unacknowledged. The records of a partition
are processed in offset order, so everything appended before ours (by any worker, before a
rebalance) has been processed too. A rebalance closes every partition, and each one's first
envelope afterwards goes through the topic; a partition this worker does not own never opens.

The partition is computed as the producer's partitioner does (Kafka's default) from the catalog's
partition count; every acknowledgement is checked against it, and a mismatch (a topic created
with another count) turns the shortcut off for the life of the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from app import metrics
from app.agents.context import event_bound
from app.partitioner import kafka_hash

log = structlog.get_logger(__name__)

TOPIC = "events.normalized"
FAILED = 1 << 62  # the end offset of an envelope that never reached the log
# How long ingress waits for the identity agent to catch up with a partition, and how often it
# looks: about one hop once per partition after each rebalance, or a backlog left by a crash.
CATCH_UP_WAIT_S = 1.0
CATCH_UP_POLL_S = 0.005


class Gate:
    """Which partitions of `events.normalized` ingress may resolve itself (pure bookkeeping)."""

    def __init__(self, partitions: int, hash_of: Callable[[bytes], int] = kafka_hash):
        self.partitions = partitions
        self.hash_of = hash_of
        self.broken = False
        self.generation = 0  # envelopes sent before the last rebalance prove nothing
        self._owned: frozenset[int] = frozenset()
        self._open: set[int] = set()
        self._unacked: dict[int, int] = {}
        self._sent_end: dict[int, int] = {}  # next offset after our last acknowledged envelope
        self._done: dict[int, int] = {}  # next offset after the identity agent's last record

    def partition_of(self, key: bytes) -> int:
        return self.hash_of(key) % self.partitions

    def allows(self, partition: int) -> bool:
        return partition in self._open

    def reset(self) -> None:
        """A rebalance started: nothing is known about any partition any more."""
        self.generation += 1
        self._owned = frozenset()
        for known in (self._open, self._unacked, self._sent_end, self._done):
            known.clear()

    def assign(self, partitions: set[int]) -> None:
        """The partitions of `events.normalized` this worker's identity agent now consumes."""
        self._owned = frozenset(partitions)

    def catching_up(self, partition: int) -> bool:
        """Closed only until the identity agent processes what ingress already sent: worth a
        short wait rather than one more envelope on the topic (which would move the goal)."""
        end = self._sent_end.get(partition)
        return (not self.broken and partition in self._owned and end != FAILED
                and (end is not None or bool(self._unacked.get(partition))))

    def sending(self, partition: int) -> int:
        """An envelope goes to `partition` on the topic; returns the generation to ack with."""
        self._unacked[partition] = self._unacked.get(partition, 0) + 1
        return self.generation

    def acked(self, generation: int, expected: int, partition: int | None,
              offset: int | None) -> None:
        """An envelope sent to `expected` was appended at (partition, offset); None: it failed."""
        if generation != self.generation:
            return
        self._unacked[expected] -= 1
        if partition is None or offset is None:
            self._sent_end[expected] = FAILED  # not in the log: stay closed until a rebalance
            return
        if partition != expected and not self.broken:
            self.broken = True
            self._open.clear()
            log.warning("identity.shortcut_off", reason="partition_count_mismatch",
                        partitions=self.partitions)
        self._sent_end[partition] = max(self._sent_end.get(partition, 0), offset + 1)
        self._check(partition)

    def processed(self, partition: int, offset: int) -> None:
        """The identity agent is done with a record of `events.normalized`."""
        self._done[partition] = offset + 1
        self._check(partition)

    def _check(self, partition: int) -> None:
        end = self._sent_end.get(partition)
        if (not self.broken and partition in self._owned and end is not None
                and not self._unacked.get(partition) and self._done.get(partition, -1) >= end):
            self._open.add(partition)


@dataclass
class _Message:
    partition: int


@dataclass
class _PartitionEvent:
    """Stands in for Faust's current event while reading a table partition ingress does not
    consume: Faust's RocksDB store picks the partition from the current event."""
    message: _Message


class Shortcut:
    """Forwards ingress's envelopes: resolved here when the gate allows, else on the topic."""

    def __init__(self, relay: Any, resolve: Callable[[str, dict], Awaitable[None]],
                 enabled: bool = True):
        partitioner = relay.app.conf.producer_partitioner
        self.relay = relay
        self.gate = Gate(relay.catalog[TOPIC].partitions or relay.settings.partitions,
                         getattr(partitioner, "hash_of", kafka_hash))
        self.resolve = resolve
        self.enabled = enabled
        self._events = {p: _PartitionEvent(_Message(p)) for p in range(self.gate.partitions)}
        self._local = metrics.IDENTITY_SHORTCUT.labels("local")
        self._topic = metrics.IDENTITY_SHORTCUT.labels("topic")

    async def forward(self, env: dict) -> None:
        key = env["customer_key"]
        raw_key = key.encode()
        partition = self.gate.partition_of(raw_key)
        if self.enabled and await self.is_open(partition):
            self._local.inc()
            with event_bound(self._events[partition]):
                await self.resolve(key, env)
            return
        self._topic.inc()
        generation = self.gate.sending(partition)
        future = await self.relay.send(TOPIC, raw_key, env)
        future.add_done_callback(
            lambda f: self.gate.acked(generation, partition, *_appended_at(f)))

    async def is_open(self, partition: int) -> bool:
        """Whether the partition is open, waiting a little while it catches up. A rebalance
        stops Faust's flow before it waits for the current event (this one), so the wait ends
        there too."""
        consumer = self.relay.app.consumer
        deadline = time.monotonic() + CATCH_UP_WAIT_S
        while (not self.gate.allows(partition) and self.gate.catching_up(partition)
               and consumer.flow_active and time.monotonic() < deadline):
            await asyncio.sleep(CATCH_UP_POLL_S)
        return self.gate.allows(partition)


def _appended_at(future: asyncio.Future) -> tuple[int | None, int | None]:
    if future.cancelled() or future.exception() is not None:
        return None, None
    meta = future.result()
    return meta.partition, meta.offset


def install(relay: Any, shortcut: Shortcut) -> None:
    relay.shortcut = shortcut

    @relay.app.on_partitions_revoked.connect
    async def close_all(*_args: Any, **_kwargs: Any) -> None:
        shortcut.gate.reset()

    @relay.app.on_partitions_assigned.connect
    async def owned(_sender: Any, assigned: Any = (), **_kwargs: Any) -> None:
        shortcut.gate.reset()  # also when no revocation came first
        shortcut.gate.assign({tp.partition for tp in assigned if tp.topic == TOPIC})
