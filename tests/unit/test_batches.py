"""Batch agents (app.batches): what the fetch loop hands over, in which order, what a batch's
acknowledgement tells Faust's consumer, and what a rebalance or a slow agent does to the queue.
Faust's consumer bookkeeping is stood in for by the fields the module reads and writes; the
integration suite runs the same code against the real consumer."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from types import SimpleNamespace
from weakref import WeakSet

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from app.batches import BatchAgent, BatchAgents


def record(topic: str, partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 1_700_000_000_000 + offset, 0, b"k",
                          b"{}", None, 1, 2, [])


class Sensors:
    def __init__(self):
        self.seen_in, self.seen_out = [], []

    def on_message_in(self, tp, offset, message):
        self.seen_in.append((tp, offset))

    def on_message_out(self, tp, offset, message):
        self.seen_out.append((tp, offset))


class Message:
    def __init__(self, tp, offset):
        self.tp, self.offset, self.acked = tp, offset, False


class Consumer:
    """The parts of Faust's consumer that batch agents use."""

    def __init__(self, assigned):
        self.assigned = set(assigned)
        self.flow_active = True
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = defaultdict(lambda: None)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._n_acked = 0
        self._unacked_messages = WeakSet()
        self._buffered_partitions = set()
        self._waiting_for_ack = None
        self.gaps = []
        self.full, self.dropped = [], []
        self.sensors = None

    def assignment(self):
        return self.assigned

    def highwater(self, tp):
        return 100

    async def _add_gap(self, tp, start, end):
        self.gaps.append((tp, start, end))

    def _to_message(self, tp, rec):
        return Message(tp, rec.offset)

    def _on_message_in(self, tp, offset, message):
        self.sensors.on_message_in(tp, offset, message)

    def on_buffer_full(self, tp):
        self.full.append(tp)

    def on_buffer_drop(self, tp):
        self.dropped.append(tp)


def app_with(assigned, generation=1):
    consumer = Consumer(assigned)
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=generation,
                          sensors=Sensors(), monitor=SimpleNamespace(
                              track_tp_end_offset=lambda tp, offset: None,
                              stream_inbound_time={}))
    consumer.sensors = app.sensors
    return app


def agents_for(app, topics=("deliveries.braze",), **kwargs):
    agents = BatchAgents(app)
    agent = BatchAgent(app, "sink", topics, handler=None, **kwargs)
    for topic in topics:
        agents.by_topic[topic] = agent
    return agents, agent


A0, A1 = TP("deliveries.braze", 0), TP("deliveries.braze", 1)
OTHER = TP("identity.profiles", 0)


async def test_a_fetch_goes_to_its_agent_by_partition_and_the_rest_stays_for_faust():
    app = app_with({A0, A1, OTHER})
    agents, agent = agents_for(app)
    fetched = {A0: [record(*A0, 5), record(*A0, 6)], A1: [record(*A1, 0)],
               OTHER: [record(*OTHER, 3)]}
    rest = await agents.take(app.consumer, fetched, {A0, A1, OTHER}, generation=1)
    assert rest == {OTHER: fetched[OTHER]}
    batch = await agent.next_batch()
    assert [(part.tp, [r.offset for r in part.records]) for part in batch.parts] == [
        (A0, [5, 6]), (A1, [0])]
    assert app.consumer._read_offset[A0] == 6 and app.consumer._read_offset[A1] == 0
    assert len(app.consumer._unacked_messages) == 2  # one tracked message per part
    assert batch.parts[0].event.message.partition == 0  # for table writes of partition 0


async def test_a_batch_handed_over_is_a_stream_processing_for_fausts_livelock_check():
    """Faust logs an ERROR for a partition with unfetched records whose stream never started
    processing (`stream_inbound_time`), 300 s after start: batch agents must keep it current."""
    app = app_with({A0, A1})
    agents, agent = agents_for(app)
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0, A1}, 1)
    assert app.monitor.stream_inbound_time == {}  # fetched is not processing
    before = time.monotonic()
    await agent.next_batch()
    assert set(app.monitor.stream_inbound_time) == {A0}
    assert app.monitor.stream_inbound_time[A0] >= before


async def test_acknowledging_a_batch_is_what_faust_would_have_recorded_per_record():
    app = app_with({A0})
    agents, agent = agents_for(app)
    await agents.take(app.consumer, {A0: [record(*A0, o) for o in (3, 4, 5)]}, {A0}, 1)
    app.consumer._committed_offset[A0] = 4  # offsets below the commit are not acked again
    batch = await agent.next_batch()
    agent.ack(batch)
    assert app.consumer._acked[A0] == [4, 5] and app.consumer._n_acked == 2
    assert not app.consumer._unacked_messages  # a rebalance no longer waits for it
    assert app.sensors.seen_out == [(A0, 5)]
    agent.ack(batch)  # twice is once
    assert app.consumer._acked[A0] == [4, 5]


async def test_records_already_read_are_not_handed_over_again_and_gaps_are_recorded():
    app = app_with({A0})
    agents, agent = agents_for(app)
    app.consumer._read_offset[A0] = 10
    await agents.take(app.consumer, {A0: [record(*A0, o) for o in (9, 10, 12, 13)]}, {A0}, 1)
    batch = await agent.next_batch()
    assert [r.offset for r in batch.parts[0].records] == [10, 12, 13]
    assert app.consumer.gaps == [(A0, 11, 12)]  # a compacted record: commits may pass it


async def test_nothing_is_handed_over_while_a_rebalance_stops_the_flow_or_for_idle_partitions():
    app = app_with({A0, A1})
    agents, agent = agents_for(app)
    app.consumer.flow_active = False
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0}, 1)
    app.consumer.flow_active = True
    await agents.take(app.consumer, {A1: [record(*A1, 0)]}, {A0}, 1)  # A1 paused: not active
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0}, generation=0)  # stale fetch
    assert not agent.parts and app.consumer._read_offset[A0] is None


async def test_parts_of_an_older_generation_are_dropped_when_their_turn_comes():
    app = app_with({A0, A1})
    agents, agent = agents_for(app)
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0, A1}, 1)
    app.consumer_generation_id = 2  # a rebalance: A0's part will be read again from the commit
    await agents.take(app.consumer, {A1: [record(*A1, 7)]}, {A0, A1}, 2)
    batch = await agent.next_batch()
    assert [part.tp for part in batch.parts] == [A1]


async def test_a_batch_holds_at_most_max_records_but_always_one_part():
    app = app_with({A0, A1})
    agents, agent = agents_for(app, max_records=3)
    await agents.take(app.consumer, {A0: [record(*A0, o) for o in range(5)]}, {A0, A1}, 1)
    await agents.take(app.consumer, {A1: [record(*A1, 0)]}, {A0, A1}, 1)
    first = await agent.next_batch()
    second = await agent.next_batch()
    assert [len(b) for b in (first, second)] == [5, 1]


async def test_a_slow_agent_holds_back_its_partitions_until_its_queue_is_down_to_half():
    app = app_with({A0, A1})
    agents, agent = agents_for(app, max_records=4, high_water=6)
    for start in (0, 4):
        await agents.take(app.consumer, {A0: [record(*A0, start + o) for o in range(4)],
                                         A1: [record(*A1, start + o) for o in range(4)]},
                          {A0, A1}, 1)
    assert sorted(app.consumer.full) == [A0, A1] and not app.consumer.dropped
    for _ in range(3):
        await agent.next_batch()
    assert not app.consumer.dropped and agent.waiting == 4  # above half the high water (3)
    await agent.next_batch()
    assert sorted(app.consumer.dropped) == [A0, A1] and agent.waiting == 0


async def test_partitions_held_and_released_are_fausts_own_type_whatever_aiokafka_fetched():
    from aiokafka.structs import TopicPartition

    app = app_with({A0})
    agents, agent = agents_for(app, high_water=1)
    await agents.take(app.consumer, {TopicPartition(*A0): [record(*A0, 0), record(*A0, 1)]},
                      {A0}, 1)
    await agent.next_batch()
    assert app.consumer.full == [A0] == app.consumer.dropped
    assert all(type(tp) is TP for tp in app.consumer.full + app.consumer.dropped)


async def test_a_rebalance_clears_the_queue_and_lets_go_of_its_tracked_messages():
    import gc

    app = app_with({A0})
    agents, agent = agents_for(app, high_water=1)
    await agents.take(app.consumer, {A0: [record(*A0, 0), record(*A0, 1)]}, {A0}, 1)
    agent.clear()
    gc.collect()
    assert not agent.parts and agent.waiting == 0 and app.consumer.dropped == [A0]
    assert not app.consumer._unacked_messages  # Faust's wait for streams does not wait for it


async def test_a_handler_that_raises_gets_the_same_batch_again_and_nothing_is_acked_before():
    app = app_with({A0})
    agents, agent = agents_for(app)
    seen = []

    async def handler(batches):
        async for batch in batches:
            seen.append([r.offset for _, r in batch.records()])
            if len(seen) == 1:
                raise RuntimeError("a bug")
            assert not app.consumer._acked[A0]
            return

    agent.handler = handler
    await agents.take(app.consumer, {A0: [record(*A0, 0), record(*A0, 1)]}, {A0}, 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.batches.RETRY_PAUSE_S", (0.0,))
        await asyncio.wait_for(agent.run(), 5)
    assert seen == [[0, 1], [0, 1]]


async def test_the_next_batch_acknowledges_the_one_before():
    app = app_with({A0})
    agents, agent = agents_for(app)
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0}, 1)
    await agents.take(app.consumer, {A0: [record(*A0, 1)]}, {A0}, 1)
    batches = agent.batches()
    first = await batches.__anext__()
    assert [r.offset for _, r in first.records()] == [0, 1]  # both fetches in one batch
    assert not app.consumer._acked[A0]
    waiting = asyncio.ensure_future(batches.__anext__())
    await asyncio.sleep(0)
    assert app.consumer._acked[A0] == [0, 1]
    waiting.cancel()


async def test_a_short_batch_lingers_for_more_records_but_not_past_its_window():
    app = app_with({A0, A1})
    agents, agent = agents_for(app, max_records=10, linger_s=0.2)
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0, A1}, 1)
    taking = asyncio.ensure_future(agent.next_batch())
    await asyncio.sleep(0.05)
    assert not taking.done()  # one record of ten: it waits for more
    await agents.take(app.consumer, {A1: [record(*A1, 0)]}, {A0, A1}, 1)
    batch = await asyncio.wait_for(taking, 1)
    assert [part.tp for part in batch.parts] == [A0, A1]
    loop = asyncio.get_running_loop()
    assert loop.time() - batch.parts[0].arrived >= 0.2


async def test_a_full_batch_or_a_stopped_flow_does_not_linger():
    app = app_with({A0})
    agents, agent = agents_for(app, max_records=2, linger_s=5)
    await agents.take(app.consumer, {A0: [record(*A0, 0), record(*A0, 1)]}, {A0}, 1)
    assert len(await asyncio.wait_for(agent.next_batch(), 1)) == 2
    await agents.take(app.consumer, {A0: [record(*A0, 2)]}, {A0}, 1)
    app.consumer.flow_active = False  # a rebalance began: hand over what there is
    assert len(await asyncio.wait_for(agent.next_batch(), 1)) == 1


async def test_while_behind_a_batch_comes_no_sooner_than_behind_s_after_the_last():
    app = app_with({A0})
    behind = [True]
    agents, agent = agents_for(app, max_records=100, linger_s=0.01, behind_s=0.3,
                               behind=lambda: behind[0])
    loop = asyncio.get_running_loop()
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0}, 1)
    await asyncio.wait_for(agent.next_batch(), 1)
    first = loop.time()
    await agents.take(app.consumer, {A0: [record(*A0, 1)]}, {A0}, 1)
    await asyncio.sleep(0.05)
    await agents.take(app.consumer, {A0: [record(*A0, 2)]}, {A0}, 1)
    batch = await asyncio.wait_for(agent.next_batch(), 2)
    assert loop.time() - first >= 0.3  # not 10 ms after its first record: behind_s
    assert [r.offset for part in batch.parts for r in part.records] == [1, 2]
    behind[0] = False  # caught up: the ordinary window again
    await agents.take(app.consumer, {A0: [record(*A0, 3)]}, {A0}, 1)
    second = loop.time()
    await asyncio.wait_for(agent.next_batch(), 1)
    assert loop.time() - second < 0.2


async def test_an_agent_is_behind_with_a_quarter_batch_waiting():
    app = app_with({A0})
    agents, agent = agents_for(app, max_records=8)
    assert agents.named(agent.name) is agent and agents.named("nobody") is None
    await agents.take(app.consumer, {A0: [record(*A0, 0)]}, {A0}, 1)
    assert not agent.backlogged()
    await agents.take(app.consumer, {A0: [record(*A0, 1), record(*A0, 2)]}, {A0}, 1)
    assert agent.backlogged()
