"""Batch agents: a topic's records handed over a fetch at a time instead of one at a time.

Faust hands every record through its conductor, a channel queue, a stream and an `Event` with
its own acknowledgement: 70-270 us per record on this machine (`faust_consume_only_per_s` of
3,600-13,600 in `relay bench`), more than the relay's own work on most records, and paid again on
every hop. A batch agent instead receives what one or more fetches returned for its topics,
grouped by partition and in offset order, and acknowledges all of it when it asks for the next
batch::

    @relay.batch_agent("deliveries.braze", name="sink-braze")
    async def sink(batches):
        async for batch in batches:
            await settler.settle(batch)

What stays Faust's: the consumer and its group membership, rebalances and flow control, the
commit of acknowledged offsets (after the producer flush, so whatever a batch sent is durable
first), and the tables with their recovery. The hand-over happens in the fetch loop
(`app.faust_drain`), before Faust's conductor would see the records.

The guarantees are those of a Faust stream:
- order: a partition's records reach its agent in offset order, one batch at a time;
- at-least-once: a batch is acknowledged only when the agent asks for the next one, so a crash
  before that reads it again; a batch whose handler raised is handed over again (after a pause)
  rather than acknowledged;
- rebalances: each partition's part of a batch is tracked by Faust's consumer like a message,
  so a rebalance waits for the batch in progress; parts still queued are dropped when Faust
  clears its stream buffers (they are read again from the committed offsets), and a part
  fetched in an older generation is never handed over;
- backpressure: while an agent has more than `high_water` records waiting (four batches'
  worth), its partitions are left out of the fetch hand-over, as Faust does for a full stream
  buffer, so a slow destination never stalls another agent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from faust.types import TP

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Records one batch holds at most (more than one fetch's worth may be waiting), and how many
# batches' worth may wait per agent before its partitions stop being handed over.
MAX_RECORDS = 2_000
HIGH_WATER_BATCHES = 4
RETRY_PAUSE_S = (0.5, 1.0, 2.0, 5.0)  # before handing a batch whose handler raised over again
SLICE_S = 0.005  # how long a handler works between turns it gives the other stages (Batch.each)


@dataclass(slots=True)
class PartitionMessage:
    topic: str
    partition: int


@dataclass(slots=True, weakref_slot=True)  # Faust holds the current event by weak reference
class PartitionEvent:
    """Stands in for Faust's current event while a batch reads and writes tables: Faust picks the
    changelog partition (and the RocksDB database) from the current event's partition."""
    message: PartitionMessage


@dataclass(slots=True)
class Part:
    """One partition's records in a batch (aiokafka `ConsumerRecord`s, in offset order)."""

    tp: Any
    records: list
    generation: int
    tracker: Any  # the Faust message the consumer tracks until the part is acknowledged
    event: PartitionEvent
    messages: list | None = None  # a Faust message per record, for per-record sensors only
    arrived: float = 0.0  # loop time it was handed over


@dataclass(slots=True)
class Batch:
    parts: list[Part]

    def __len__(self) -> int:
        return sum(len(part.records) for part in self.parts)

    def records(self) -> Iterator[tuple[Part, Any]]:
        for part in self.parts:
            for record in part.records:
                yield part, record

    def each(self) -> AsyncIterator[tuple[Part, Any]]:
        """`records()`, taking turns with the other stages (`in_turns`)."""
        return in_turns(self.records())


async def in_turns(items: Iterable[T]) -> AsyncIterator[T]:
    """`items`, giving the event loop a turn every SLICE_S of work. A stage's awaits rarely
    suspend (sends only queue), so a batch of 2,000 ingress records at ~100 us each held every
    other stage up for 200 ms: the worst of the latency tail."""
    loop = asyncio.get_running_loop()
    until = loop.time() + SLICE_S
    for item in items:
        yield item
        if loop.time() > until:
            await asyncio.sleep(0)
            until = loop.time() + SLICE_S


Handler = Callable[[AsyncIterator[Batch]], Awaitable[None]]


class BatchAgent:
    """The queue between the fetch loop and one agent, and the agent's supervision."""

    def __init__(self, app: Any, name: str, topics: tuple[str, ...], handler: Handler,
                 max_records: int = MAX_RECORDS, high_water: int | None = None,
                 before_ack: Callable[[], Awaitable[None]] | None = None,
                 linger_s: float = 0.0, behind_s: float = 0.0,
                 behind: Callable[[], bool] | None = None):
        self.app = app
        # How long a batch may wait for more records after its first arrived, while it holds
        # fewer than max_records: a sink's requests carry more items (Braze takes 75 per call)
        # for that much latency when traffic is light; under load batches fill at once.
        self.linger_s = linger_s
        # While `behind()` (the worker has a backlog), a batch is handed over no sooner than
        # `behind_s` after the previous one: what it gathers is what arrived meanwhile, and
        # an event's latency is its wait in the backlog, not this.
        self.behind_s = behind_s
        self.behind = behind
        self._handed_at = 0.0  # loop time the last batch was handed over
        self.before_ack = before_ack  # sends what the batch left buffered (app.bundles)
        self.name = name
        self.topics = topics
        self.handler = handler
        self.max_records = max_records
        self.high_water = high_water or HIGH_WATER_BATCHES * max_records
        self.parts: deque[Part] = deque()
        self.waiting = 0  # records queued
        self.held: set[Any] = set()  # partitions left out of the hand-over (backpressure)
        self.current: Batch | None = None  # handed over, not yet acknowledged
        self._ready = asyncio.Event()

    # -- the fetch loop's side ---------------------------------------------------------------

    def put(self, part: Part) -> None:
        part.arrived = asyncio.get_running_loop().time()
        self.parts.append(part)
        self.waiting += len(part.records)
        self._ready.set()
        if self.waiting > self.high_water and part.tp not in self.held:
            self.held.add(part.tp)
            self.app.consumer.on_buffer_full(part.tp)

    def backlogged(self) -> bool:
        """Whether a quarter of a full batch waits beyond the one being worked on: the agent is
        behind (a worker keeping up has a fetch or two waiting at most)."""
        return self.waiting >= max(1, self.max_records // 4)

    def clear(self) -> None:
        """Faust clears its stream buffers at a rebalance (`flow_control.clear`): so do we. The
        parts' trackers go with them (the consumer tracks them weakly)."""
        self.parts.clear()
        self.waiting = 0
        self._release_held()

    def _release_held(self) -> None:
        for tp in self.held:
            self.app.consumer.on_buffer_drop(tp)
        self.held.clear()

    # -- the agent's side --------------------------------------------------------------------

    async def next_batch(self) -> Batch:
        """The parts waiting, up to `max_records` (at least one part), of this generation."""
        while True:
            while not self.parts:
                self._ready.clear()
                await self._ready.wait()
            await self._linger()
            generation = self.app.consumer_generation_id
            taken: list[Part] = []
            count = 0
            while self.parts and (not taken or count + len(self.parts[0].records)
                                  <= self.max_records):
                part = self.parts.popleft()
                self.waiting -= len(part.records)
                if part.generation != generation:
                    self.app.consumer._unacked_messages.discard(part.tracker)
                    continue
                taken.append(part)
                count += len(part.records)
            if self.held and self.waiting <= self.high_water // 2:
                self._release_held()
            if taken:
                self._handed_at = asyncio.get_running_loop().time()
                self._processing(taken)
                return Batch(taken)

    def _processing(self, taken: list[Part]) -> None:
        """Tell Faust's monitor that each partition's stream is processing, as its streams do
        per event (`on_stream_event_in`). Faust's livelock check reads this time: without it,
        a partition with records not yet fetched, 300 s after start, was logged as an ERROR
        ("Stream has not started processing") while its batch agent was keeping up."""
        inbound = self.app.monitor.stream_inbound_time
        now = time.monotonic()
        for part in taken:
            inbound[part.tp] = now

    async def _linger(self) -> None:
        """Wait for more records while the batch is short, up to `linger_s` after the first
        part arrived (`behind_s` after the last hand-over while the worker is behind), and
        never while a rebalance stops the flow."""
        if self.linger_s <= 0 and self.behind_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = self.parts[0].arrived + self.linger_s
        if self.behind_s > 0 and self.behind is not None and self.behind():
            deadline = max(deadline, self._handed_at + self.behind_s)
        while (self.waiting < self.max_records and self.app.consumer.flow_active
               and (left := deadline - loop.time()) > 0):
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), left)
            except asyncio.TimeoutError:
                return

    def ack(self, batch: Batch) -> None:
        """Mark every record of `batch` as processed, as Faust's consumer does per message; its
        commit then moves past them (after flushing the producer)."""
        from faust.transport.consumer import ack_lock
        from mode.utils.futures import notify

        consumer = self.app.consumer
        assigned = consumer.assignment()
        with ack_lock:
            for part in batch.parts:
                tracker = part.tracker
                if tracker.acked:
                    continue
                tracker.acked = True
                consumer._unacked_messages.discard(tracker)
                tp = part.tp
                if tp not in assigned:
                    continue  # revoked meanwhile: its new owner reads it from the commit
                committed = consumer._committed_offset[tp]
                index, acked = consumer._acked_index[tp], consumer._acked[tp]
                n = 0
                for record in part.records:
                    offset = record.offset
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked.append(offset)
                        n += 1
                consumer._n_acked += n
                sensors = self.app.sensors
                for message in part.messages or [consumer._to_message(tp, part.records[-1])]:
                    sensors.on_message_out(tp, message.offset, message)
        notify(consumer._waiting_for_ack)

    async def batches(self) -> AsyncIterator[Batch]:
        """What the handler iterates: each batch is acknowledged when the next is asked for."""
        while True:
            if self.current is None:
                self.current = await self.next_batch()
            yield self.current
            if self.before_ack is not None:
                await self.before_ack()
            self.ack(self.current)
            self.current = None

    async def run(self) -> None:
        """Run the handler for good: one that raises is restarted with the same batch again."""
        failures = 0
        while True:
            try:
                await self.handler(self.batches())
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the agent for good
                pause = RETRY_PAUSE_S[min(failures, len(RETRY_PAUSE_S) - 1)]
                failures += 1
                log.exception("batch_agent.crashed", agent=self.name, error=type(exc).__name__,
                              records=len(self.current) if self.current else 0, retry_in_s=pause)
                await asyncio.sleep(pause)


class BatchAgents:
    """The app's batch agents by topic, for the fetch loop (`app.faust_drain`).

    Faust's sensors hear of one message per partition part, unless `per_record_sensors` (for
    Faust's own Prometheus monitor, whose message counters should count records)."""

    def __init__(self, app: Any, per_record_sensors: bool = False):
        self.app = app
        self.per_record_sensors = per_record_sensors
        self.by_topic: dict[str, BatchAgent] = {}
        # Awaited after each batch, before its acknowledgement (the relay sends its bundles).
        self.before_ack: Callable[[], Awaitable[None]] | None = None

    def named(self, name: str) -> BatchAgent | None:
        return next((agent for agent in self.by_topic.values() if agent.name == name), None)

    async def _before_ack(self) -> None:
        if self.before_ack is not None:
            await self.before_ack()

    def agent(self, topic: Any, name: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Register `handler` for the topics of Faust `topic` (subscribed like an agent's)."""
        def register(handler: Handler) -> Handler:
            names = tuple(topic.topics)
            agent = BatchAgent(self.app, name, names, handler, before_ack=self._before_ack,
                               **kwargs)
            for one in names:
                if one in self.by_topic:
                    raise ValueError(f"topic {one} already has batch agent "
                                     f"{self.by_topic[one].name}")
                self.by_topic[one] = agent
            self.app.topics.add(topic)  # the consumer subscribes to what the conductor holds
            self.app.flow_control.manage_queue(agent)
            self.app.task(agent.run)
            return handler
        return register

    async def take(self, consumer: Any, records: dict, active: set | None,
                   generation: int) -> dict:
        """Hand the fetched records of batch topics to their agents; returns the rest (for
        Faust's per-record path). Mirrors what Faust's `getmany` and fetch loop do per record:
        only partitions still active (or buffered), the read offset and the gaps kept."""
        rest = {}
        by_topic = self.by_topic
        read_offset = consumer._read_offset
        for fetched_tp, batch in records.items():
            agent = by_topic.get(fetched_tp.topic)
            if agent is None:
                rest[fetched_tp] = batch
                continue
            # Faust's own type: aiokafka's TopicPartition compares equal, but Faust asserts its
            # active-partition set holds nothing else (a held partition goes back into it).
            tp = TP(fetched_tp.topic, fetched_tp.partition)
            if not consumer.flow_active or self.app.consumer_generation_id != generation:
                continue  # a rebalance began: read again from the committed offsets
            if not (active is None or tp in active or tp in consumer._buffered_partitions):
                continue
            previous = read_offset[tp]
            if previous is not None:
                batch = [r for r in batch if r.offset >= previous]
                if not batch:
                    continue
            self.app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
            for record in batch:
                offset = record.offset
                if previous and offset - previous > 1:
                    await consumer._add_gap(tp, previous + 1, offset)
                previous = offset
            read_offset[tp] = previous
            tracker = consumer._to_message(tp, batch[0])
            consumer._unacked_messages.add(tracker)
            messages = None
            if self.per_record_sensors:
                messages = [consumer._to_message(tp, record) for record in batch]
            for message in messages or [tracker]:
                consumer._on_message_in(tp, message.offset, message)
            agent.put(Part(tp, batch, generation, tracker,
                           PartitionEvent(PartitionMessage(tp.topic, tp.partition)), messages))
        return rest
