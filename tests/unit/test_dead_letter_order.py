"""A dead-lettered delivery's ledger status is written only once the broker has its dead-letter
record: a status that outlived its record in a crash would have its delivery skipped as settled
when the source record is read again, and nobody would ever see it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.streams import current_event

from app.agents.context import bind_event
from app.agents.sinks import Settler
from app.delivery.core import Outcome


class Event:
    """What the sink reads of a Faust event: its message's topic and partition."""

    def __init__(self, partition: int):
        self.message = SimpleNamespace(topic="deliveries.braze", partition=partition)


class RecordingRelay:
    def __init__(self):
        self.sent, self.puts, self.outcome_hooks = [], [], []
        self.dlq_ack = asyncio.get_running_loop().create_future()

    async def send(self, topic, key, value, headers=None):
        self.sent.append(topic)
        return self.dlq_ack

    async def put(self, table, key, value):
        self.puts.append((key, value["status"], current_event()))
        return asyncio.get_running_loop().create_future()

    async def emit(self, *args, **fields):
        pass


async def test_the_ledger_status_waits_for_the_dead_letter_record():
    relay = RecordingRelay()
    settler = Settler.__new__(Settler)
    settler.relay, settler.dest, settler.ledger, settler._dead_letters = relay, "braze", {}, []
    event = Event(2)
    bind_event(event)
    delivery = {"delivery_id": "braze:track_event:e1", "action": "track_event",
                "event_id": "e1", "customer_key": "c1", "envelope": {}}
    await settler.finish(Outcome(delivery, "failed", "invalid: no name"), in_lane=False)
    assert relay.sent == ["deliveries.dlq"] and relay.puts == []

    other = Event(0)
    bind_event(other)
    durable = asyncio.create_task(settler.dead_letters_durable())
    await asyncio.sleep(0.01)
    assert relay.puts == []  # the dead-letter record is not acknowledged yet
    relay.dlq_ack.set_result(None)
    await durable
    assert relay.puts == [("braze:track_event:e1", "dead_lettered", event)]  # its own partition
    await settler.dead_letters_durable()  # nothing left over
    assert len(relay.puts) == 1
