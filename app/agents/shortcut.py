"""Shortcuts: a stage runs the work of a topic's consumer itself, for the partitions of that topic
this worker owns, instead of sending a record there.

Three topics have one, each partitioned like the table its consumer keeps:
- `events.normalized` (identity agent, `identities` table): ingress resolves an envelope's
  profile itself (the identity agent's `on_envelope`), reading exactly the index partition that
  agent would read;
- `identity.claims` (identity agent): a lookup of an identifier the envelope's own partition
  does not know, and a bind of a profile's new identifier (sent by the route stage), run
  against that identifier's index partition here. Without it a new customer's event took up to
  three more hops through the topic, one per unify key (p99 of the identity stage 95 -> 270 ms
  with 5 % sign-ups);
- `identity.profiles` (route agent, `profiles` table): the resolved envelope is enriched,
  screened and routed by whoever resolved it, ingress most of the time.

Each hop cost a produce, a fetch, a consume and a JSON round trip, and about 35-40 ms of latency
on the embedded broker (BENCHMARKS.md).

What a shortcut must not do is overtake a record of the same partition that went through the
topic. So a partition opens only once its consumer has processed a record at or past every
record this worker sent to it, with none of them still unacknowledged. The records of a
partition are processed in offset order, so everything appended before ours (by any worker,
before a rebalance) has been processed too. A rebalance closes every partition, and each one's
first record afterwards goes through the topic; a partition this worker does not own never
opens. A record this worker must still send through the topic (the consumer's own work, or a
partition busy, below) closes its partition again until the consumer has processed it. Work of
other workers arriving through the topic meanwhile is as concurrent with ours as it ever was.

Work run here must not interleave with the consumer's on the same table entry. The identity
agent's work reads and writes an entry with no await in between (`Relay.put` writes the store
before it sends the changelog record), so it is atomic. The route stage awaits between reading a
profile and writing it back (it screens and sends the event's deliveries in between), so its
shortcut is `exclusive`: the route agent holds a partition's lock while it processes a record,
and work runs here only when nobody holds it, never waiting for it (the record takes the topic
instead), so no two locks are ever waited for at once.

The partition is computed as the producer's partitioner does (Kafka's default) from the catalog's
partition count; every acknowledgement is checked against it, and a mismatch (a topic created
with another count) turns the shortcut off for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any

import structlog

from app import metrics
from app.agents.context import bind_event, restore_event
from app.batches import PartitionEvent, PartitionMessage
from app.partitioner import kafka_hash

log = structlog.get_logger(__name__)

TOPIC = "events.normalized"  # ingress's shortcut (the identity agent's other one: CLAIMS)
CLAIMS = "identity.claims"
PROFILES = "identity.profiles"  # the route agent's
FAILED = 1 << 62  # the end offset of an envelope that never reached the log
# How long ingress waits for the identity agent to catch up with a partition, and how often it
# looks: about one hop once per partition after each rebalance, or a backlog left by a crash.
CATCH_UP_WAIT_S = 1.0
CATCH_UP_POLL_S = 0.005
# Set in the tasks of the agents that consume the shortcuts' topics (identity, route): waiting
# there for a partition to catch up could wait for itself.
_CATCHES_UP: ContextVar[bool] = ContextVar("relay_shortcut_catches_up", default=False)


def consuming_here() -> None:
    """The current task processes the shortcuts' topics: its shortcuts never wait for them."""
    _CATCHES_UP.set(True)


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
        """A record goes to `partition` on the topic; returns the generation to ack with. The
        partition stays closed until the consumer has processed it."""
        self._unacked[partition] = self._unacked.get(partition, 0) + 1
        self._open.discard(partition)
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


class Shortcut:
    """Sends a stage's records to `topic`, or runs their work here when the gate allows."""

    def __init__(self, relay: Any, topic: str, enabled: bool = True, exclusive: bool = False):
        partitioner = relay.app.conf.producer_partitioner
        self.relay = relay
        self.topic = topic
        self.gate = Gate(relay.catalog[topic].partitions or relay.settings.partitions,
                         getattr(partitioner, "hash_of", kafka_hash))
        self.enabled = enabled
        # The current event of work run here, in a table partition this stage may not consume
        self._events = {p: PartitionEvent(PartitionMessage(topic, p))
                        for p in range(self.gate.partitions)}
        # exclusive: a partition's work runs in one task at a time (see the module doc)
        self._locks = ({p: asyncio.Lock() for p in range(self.gate.partitions)}
                       if exclusive else None)
        self._local = metrics.IDENTITY_SHORTCUT.labels(topic, "local")
        self._topic = metrics.IDENTITY_SHORTCUT.labels(topic, "topic")

    def holding(self, partition: int) -> AbstractAsyncContextManager:
        """For the consumer: hold `partition` while processing its record (`async with`)."""
        if self._locks is None or partition not in self._locks:
            return contextlib.nullcontext()
        return self._locks[partition]

    async def forward(self, key: bytes, value: Any, here: Callable[[], Awaitable[None]],
                      headers: list[tuple[str, bytes]] | None = None) -> None:
        """`await here()` in the context of the key's partition when it is open (and nobody
        holds it), else send `value` with `headers` to the topic under `key`."""
        partition = self.gate.partition_of(key)
        # allows() first: the open partition is the common case, and is_open's wait costs a
        # coroutine per call
        if self.enabled and (self.gate.allows(partition) or await self.is_open(partition)):
            lock = self._locks[partition] if self._locks is not None else None
            if lock is None or not lock.locked():
                self._local.inc()
                token = bind_event(self._events[partition])
                try:
                    if lock is None:
                        await here()
                    else:
                        async with lock:
                            await here()
                finally:
                    restore_event(token)
                return
        self._topic.inc()
        generation = self.gate.sending(partition)
        future = await self.relay.send(self.topic, key, value, headers=headers)
        future.add_done_callback(
            lambda f: self.gate.acked(generation, partition, *_appended_at(f)))

    async def is_open(self, partition: int) -> bool:
        """Whether the partition is open, waiting a little while it catches up (not in the task
        that does the catching up: `consuming_here`). A rebalance stops Faust's flow before it
        waits for the current event (this one), so the wait ends there too."""
        if _CATCHES_UP.get():
            return self.gate.allows(partition)
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
    """Close the shortcut's partitions at every rebalance, and learn which it owns after it."""
    @relay.app.on_partitions_revoked.connect
    async def close_all(*_args: Any, **_kwargs: Any) -> None:
        shortcut.gate.reset()

    @relay.app.on_partitions_assigned.connect
    async def owned(_sender: Any, assigned: Any = (), **_kwargs: Any) -> None:
        shortcut.gate.reset()  # also when no revocation came first
        shortcut.gate.assign({tp.partition for tp in assigned if tp.topic == shortcut.topic})
