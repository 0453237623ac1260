"""An exclusive shortcut (the route stage's: app/agents/shortcut.py) runs a partition's work in
one task at a time, and never waits for a partition another task holds: that record takes the
topic instead, and the partition stays closed until its consumer has processed it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.agents.shortcut import PROFILES, Shortcut
from app.config import Settings


class FakeRelay:
    """Just what a Shortcut uses: the catalog, settings, the producer's partitioner, `send`."""

    def __init__(self):
        self.catalog = {PROFILES: SimpleNamespace(partitions=4)}
        self.settings = Settings()
        self.app = SimpleNamespace(conf=SimpleNamespace(producer_partitioner=None),
                                   consumer=SimpleNamespace(flow_active=True))
        self.sent: list[tuple[str, bytes, object]] = []

    async def send(self, topic, key, value, headers=None):
        self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(partition=None, offset=None))
        return future


def open_lane(exclusive: bool = True) -> tuple[Shortcut, FakeRelay, bytes, int]:
    relay = FakeRelay()
    lane = Shortcut(relay, PROFILES, exclusive=exclusive)
    key = b"profile-1"
    partition = lane.gate.partition_of(key)
    lane.gate.assign({0, 1, 2, 3})
    generation = lane.gate.sending(partition)
    lane.gate.acked(generation, partition, partition, 0)
    lane.gate.processed(partition, 0)
    assert lane.gate.allows(partition)
    return lane, relay, key, partition


async def test_work_runs_here_in_its_partition_while_nobody_holds_it():
    lane, relay, key, partition = open_lane()
    seen = []

    async def here():
        from faust.streams import current_event
        seen.append(current_event().message.partition)

    await lane.forward(key, {"doc": 1}, here)
    assert seen == [partition] and relay.sent == []


async def test_a_held_partition_sends_through_the_topic_and_closes():
    lane, relay, key, partition = open_lane()
    ran = []

    async with lane.holding(partition):  # the route agent, mid-record
        await lane.forward(key, {"doc": 1}, lambda: ran.append(1))
    assert ran == [] and relay.sent == [(PROFILES, key, {"doc": 1})]
    assert not lane.gate.allows(partition)


async def test_the_consumer_waits_for_work_running_here():
    lane, _relay, key, partition = open_lane()
    order = []
    release = asyncio.Event()

    async def here():
        order.append("here starts")
        await release.wait()  # awaits between reading and writing a profile
        order.append("here ends")

    async def consumer():
        async with lane.holding(partition):
            order.append("consumer")

    running = asyncio.create_task(lane.forward(key, {}, here))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(consumer())
    await asyncio.sleep(0.01)
    assert order == ["here starts"]
    release.set()
    await asyncio.gather(running, waiting)
    assert order == ["here starts", "here ends", "consumer"]


async def test_a_shortcut_that_is_not_exclusive_holds_nothing():
    lane, _relay, key, partition = open_lane(exclusive=False)
    ran = []
    async with lane.holding(partition):
        await lane.forward(key, {}, lambda: _append(ran))
    assert ran == [1]


async def _append(ran: list) -> None:
    ran.append(1)
