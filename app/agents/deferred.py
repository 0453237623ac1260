"""Deferred deliveries: messages held until the customer's quiet hours end.

The route stage sends a delivery it defers (app/safety) to `deliveries.deferred`, keyed by the
customer, with `not_before`. This agent keeps it in the `deferred` table (durable through the
table's changelog, so a restart keeps it) and, on the ticks a timer publishes to every partition,
releases what is due to the destination's main topic, where the sink delivers it like any other
item: same ledger, retries and dead-letters.

Why not the retry lane: it retries its head item in place, so an item due in nine hours would
hold every other customer of its partition behind it.
Why ticks through Kafka: a table may only change inside an event of its own partition, so a tick
on partition p releases the items stored from partition p.
Release sends first and forgets second: a crash in between releases the item again, and the
sink's ledger recognises the copy.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

import orjson
import structlog

from app import logs, metrics
from app.agents.context import Relay
from app.agents.identity import OP, header

log = structlog.get_logger(__name__)

TOPIC = "deliveries.deferred"


class Schedule:
    """Due times of the stored items per partition, rebuilt from the table after a rebalance."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.heaps: dict[int, list[tuple[float, str]]] = {}

    def heap(self, partition: int) -> list[tuple[float, str]]:
        if partition not in self.heaps:
            heap = []
            for key, raw in list(self.table.items()):
                item = orjson.loads(raw)
                if item.get("p") == partition:
                    heap.append((float(item["d"].get("not_before") or 0), key))
            heapq.heapify(heap)
            self.heaps[partition] = heap
        return self.heaps[partition]

    def add(self, partition: int, delivery: dict) -> bool:
        """Store a deferred delivery; False when it is already stored (a replay)."""
        key = delivery["delivery_id"]
        heap = self.heap(partition)
        if self.table.get(key) is not None:
            return False
        self.table[key] = orjson.dumps({"p": partition, "d": delivery})
        heapq.heappush(heap, (float(delivery.get("not_before") or 0), key))
        return True

    def due(self, partition: int, now: float) -> list[dict]:
        """The stored deliveries of `partition` due at `now` (still in the table)."""
        heap, out = self.heap(partition), []
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            raw = self.table.get(key)
            if raw is not None:
                out.append(orjson.loads(raw)["d"])
        return out


def install(relay: Relay) -> None:
    app = relay.app
    schedule = Schedule(relay.table("deferred", value_type=bytes))
    topic = relay.topic(TOPIC)
    partitions = relay.catalog[TOPIC].partitions or relay.settings.partitions

    @app.on_partitions_revoked.connect
    async def forget(*_args: Any, **_kwargs: Any) -> None:
        schedule.heaps.clear()

    async def release(partition: int) -> None:
        for delivery in schedule.due(partition, time.time()):
            logs.bind_event(delivery.get("envelope"), delivery_id=delivery["delivery_id"])
            await relay.send(f"deliveries.{delivery['destination']}", delivery.get("customer_key"),
                             {**delivery, "not_before": 0.0})
            schedule.table.pop(delivery["delivery_id"], None)
            metrics.DEFERRED_RELEASED.labels(delivery["destination"]).inc()
            log.info("safety.released", destination=delivery["destination"])

    @app.agent(topic, name="deferred")
    async def deferred_agent(stream):
        async for event in stream.events():
            try:
                partition = event.message.partition
                if header(event.message, OP) == b"tick":
                    await release(partition)
                else:
                    schedule.add(partition, orjson.loads(event.value))
            except Exception as exc:  # a bug must not stop the stream or lose the item
                await relay.internal_error("deferred", event.message, exc)

    @app.timer(interval=relay.settings.defer_tick_s)
    async def tick() -> None:
        for partition in range(partitions):
            await topic.send(key=None, value=b"", partition=partition, headers=[(OP, b"tick")])
