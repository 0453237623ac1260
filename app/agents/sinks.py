"""Sinks: one agent per destination topic and one per retry topic.

A sink takes a batch, skips what the ledger says is already done, delivers the rest through the
shared core, and records every outcome (ledger, retry topic, DLQ, relay.outcomes) before the
batch's offsets are acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from app import metrics
from app.agents.context import Relay, bind_event
from app.config import DESTINATIONS
from app.delivery.core import TERMINAL, Deliverer
from app.destinations.registry import DESTINATIONS as IMPLEMENTATIONS
from app.pipeline import delivery_dead_letter, event_age_s, retry_record


class Settler:
    """Delivers batches for one destination and records their outcomes."""

    def __init__(self, relay: Relay, dest: str):
        self.relay = relay
        self.dest = dest
        self.ledger = relay.table("ledger")
        self.deliverer = Deliverer(IMPLEMENTATIONS[dest], relay.settings, trace_ids=relay.trace_ids)

    async def settle(self, batch: list[tuple[Any, dict]]) -> None:
        """`batch` pairs each delivery with its Kafka event: ledger reads and writes happen in
        that event's context, so they land in the partition the delivery came from."""
        relay, dest = self.relay, self.dest
        todo, event_of = [], {}
        for event, delivery in batch:
            bind_event(event)
            event_of[delivery["delivery_id"]] = event
            done = self.ledger.get(delivery["delivery_id"])
            if done and done.get("status") in TERMINAL:
                metrics.LEDGER_HITS.labels(dest).inc()
                await relay.emit("deliver", "duplicate_skipped", destination=dest,
                                 delivery_id=delivery["delivery_id"], event_id=delivery["event_id"])
                continue
            todo.append(delivery)
        if not todo:
            return
        metrics.BATCH_SIZE.labels(dest).observe(len(todo))
        results = await self.deliverer.deliver(todo)
        metrics.BREAKER_STATE.labels(dest).set(
            metrics.BREAKER_CODES.get(self.deliverer.breaker.state, 0))
        for outcome in results:
            bind_event(event_of[outcome.delivery_id])
            await self.record(outcome)

    async def record(self, outcome) -> None:
        relay, dest, settings = self.relay, self.dest, self.relay.settings
        delivery, status = outcome.delivery, outcome.status
        key = delivery.get("customer_key") or ""
        if status == "retry":
            if int(delivery.get("attempt", 0)) < settings.topic_retry_max:
                metrics.RETRIES.labels(dest, "topic").inc()
                await relay.send(f"deliveries.retry.{dest}", key, retry_record(
                    delivery, settings, outcome.reason, outcome.retry_after_s))
                await relay.emit("deliver", "retrying", destination=dest,
                                 action=delivery["action"], delivery_id=outcome.delivery_id,
                                 event_id=delivery["event_id"], reason=outcome.reason)
                return
            status = "dead_lettered"
        if status in ("failed", "dead_lettered"):
            status = "dead_lettered"
            metrics.DLQ.labels(dest, outcome.reason.split(":")[0][:40]).inc()
            await relay.send("deliveries.dlq", key, delivery_dead_letter(
                delivery, outcome.reason, int(delivery.get("attempt", 0)) + outcome.attempts,
                outcome.detail))
        self.ledger[outcome.delivery_id] = {"status": status, "at": time.time()}
        metrics.OUTCOMES.labels(dest, delivery["action"], status).inc()
        age = event_age_s(delivery.get("envelope") or {})
        if status == "delivered" and age is not None:
            metrics.EVENT_AGE.labels(dest).observe(age)
        await relay.emit("deliver", status, destination=dest, action=delivery["action"],
                         delivery_id=outcome.delivery_id, event_id=delivery["event_id"],
                         reason=outcome.reason)
        for hook in relay.outcome_hooks:
            await hook(dest, outcome, status)


def install(relay: Relay) -> None:
    for dest in DESTINATIONS:
        _install_destination(relay, dest)


def _install_destination(relay: Relay, dest: str) -> None:
    settler = Settler(relay, dest)
    settings = relay.settings

    @relay.app.agent(relay.topic(f"deliveries.{dest}"), name=f"sink-{dest}")
    async def sink(stream):
        batches = stream.take_events(settings.sink_batch_max, within=settings.sink_batch_window_s)
        async for events in batches:
            await settler.settle([(event, orjson.loads(event.value)) for event in events])

    @relay.app.agent(relay.topic(f"deliveries.retry.{dest}"), name=f"retry-{dest}")
    async def retry(stream):
        async for event in stream.events():
            delivery = orjson.loads(event.value)
            wait = float(delivery.get("not_before", 0)) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await settler.settle([(event, delivery)])
