"""The Faust app: topics from the catalog, tables, and one short agent per stage.

Agents are `async for` loops; the work is in `app.pipeline` (pure) and `app.delivery` (I/O).
Values are raw bytes encoded with orjson: cheaper than Faust records on every hop.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import faust
import orjson
import structlog

from app import metrics
from app.catalog import load_catalog
from app.config import DESTINATIONS, Settings
from app.delivery.core import TERMINAL, Deliverer
from app.destinations.registry import DESTINATIONS as DESTINATION_IMPLS
from app.envelope import Rejected
from app.pipeline import (
    TOPIC_SOURCES,
    delivery_dead_letter,
    enrich,
    event_age_s,
    ingress_dead_letter,
    normalize_record,
    origin_of,
    outcome_record,
    retry_record,
    route,
)
from app.routing import load_rules

log = structlog.get_logger(__name__)


def create_app(settings: Settings, trace_ids: bool = False) -> faust.App:
    """Build the relay's Faust app. `trace_ids` adds delivery ids to bodies (sandbox only)."""
    catalog = load_catalog(settings)
    rules = load_rules(settings.routes_file)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=settings.store,
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_rebalance_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8192,
        table_standby_replicas=0,
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        web_transport="tcp://",
    )

    def topic(name: str) -> faust.TopicT:
        spec = catalog[name]
        return app.topic(name, partitions=spec.partitions, key_serializer="raw",
                         value_serializer="raw", internal=False)

    ingress = app.topic(*[t for t in TOPIC_SOURCES if t in catalog], key_serializer="raw",
                        value_serializer="raw")
    normalized = topic("events.normalized")
    ingress_dlq = topic("ingress.dlq")
    deliveries_dlq = topic("deliveries.dlq")
    outcomes = topic("relay.outcomes")
    dest_topics = {d: topic(f"deliveries.{d}") for d in DESTINATIONS}
    retry_topics = {d: topic(f"deliveries.retry.{d}") for d in DESTINATIONS}

    identities = app.Table("identities", default=None, partitions=settings.partitions,
                           key_type=str)
    ledger = app.Table("ledger", default=None, partitions=settings.partitions,
                       key_type=str)
    app.relay_tables = {"identities": identities, "ledger": ledger}

    async def emit(stage: str, status: str, key: bytes | None = None, **fields: Any) -> None:
        if settings.emit_outcomes:
            await outcomes.send(key=key, value=orjson.dumps(outcome_record(stage, status, **fields)))

    @app.agent(ingress, name="ingress")
    async def ingress_agent(stream):
        async for event in stream.events():
            msg = event.message
            origin = origin_of(msg.topic, msg.partition, msg.offset)
            metrics.CONSUMED.labels(msg.topic).inc()
            headers = list(msg.headers or [])
            try:
                envelopes = normalize_record(msg.topic, event.value, dict(headers), settings)
            except Exception as exc:
                if not isinstance(exc, Rejected):
                    log.exception("ingress.internal_error", origin=origin)
                    exc = Rejected("internal_error", type(exc).__name__)
                source = TOPIC_SOURCES.get(msg.topic, "")
                metrics.INGRESS_DLQ.labels(source, exc.code).inc()
                await ingress_dlq.send(key=event.key, value=orjson.dumps(ingress_dead_letter(
                    exc, msg.topic, msg.partition, msg.offset, event.key, event.value, headers)))
                await emit("ingress", "dead_lettered", origin=origin, reason=exc.code)
                continue
            for env in envelopes:
                env["trace"]["origin"] = origin
                metrics.NORMALIZED.labels(env["source"], env["type"]).inc()
                if env["type"].endswith(".unmapped"):
                    metrics.UNMAPPED.labels(env["source"]).inc()
                await normalized.send(key=env["customer_key"].encode(), value=orjson.dumps(env))
            await emit("ingress", "normalized", origin=origin,
                       event_ids=[e["event_id"] for e in envelopes])

    async def route_one(key: bytes | None, raw: bytes) -> None:
        env = orjson.loads(raw)
        ckey = env.get("customer_key") or ""
        if ckey:
            known = identities.get(ckey)
            merged = {**(known or {}), **env.get("identities", {})}
            if merged != known:
                identities[ckey] = merged
                metrics.IDENTITY_UPDATES.labels("event").inc()
            enrich(env, known)
        planned = route(rules, env)
        if not planned:
            metrics.UNROUTED.labels(env.get("source", "")).inc()
        for delivery in planned:
            metrics.ROUTED.labels(delivery["destination"], delivery["action"]).inc()
            await dest_topics[delivery["destination"]].send(key=key, value=orjson.dumps(delivery))
        await emit("route", "routed", origin=env["trace"].get("origin"), event_id=env["event_id"],
                   deliveries=[[d["destination"], d["action"], d["delivery_id"]] for d in planned])

    @app.agent(normalized, name="route")
    async def route_agent(stream):
        async for event in stream.events():
            try:
                await route_one(event.key, event.value)
            except Exception as exc:  # a bug must not stop the stream or lose the event
                await internal_error("route", event, exc)

    async def internal_error(stage: str, event, exc: Exception) -> None:
        msg = event.message
        origin = origin_of(msg.topic, msg.partition, msg.offset)
        log.exception(f"{stage}.internal_error", origin=origin, error=type(exc).__name__)
        rejected = Rejected("internal_error", f"{stage}: {type(exc).__name__}")
        await ingress_dlq.send(key=event.key, value=orjson.dumps(ingress_dead_letter(
            rejected, msg.topic, msg.partition, msg.offset, event.key, event.value,
            list(msg.headers or []))))
        await emit(stage, "dead_lettered", origin=origin, reason="internal_error")

    deliverers: dict[str, Deliverer] = {}

    def deliverer(dest: str) -> Deliverer:
        if dest not in deliverers:
            deliverers[dest] = Deliverer(DESTINATION_IMPLS[dest], settings, trace_ids=trace_ids)
        return deliverers[dest]

    async def settle(dest: str, batch: list[tuple[Any, dict]]) -> None:
        """Deliver a batch and record each outcome before the source offsets can advance.

        `batch` pairs each delivery with its Kafka event: table reads and writes are made in
        that event's context, so they land in the partition the delivery came from."""
        todo, event_of = [], {}
        for event, delivery in batch:
            bind_event(event)
            event_of[delivery["delivery_id"]] = event
            done = ledger.get(delivery["delivery_id"])
            if done and done.get("status") in TERMINAL:
                metrics.LEDGER_HITS.labels(dest).inc()
                await emit("deliver", "duplicate_skipped", destination=dest,
                           delivery_id=delivery["delivery_id"], event_id=delivery["event_id"])
                continue
            todo.append(delivery)
        if not todo:
            return
        metrics.BATCH_SIZE.labels(dest).observe(len(todo))
        results = await deliverer(dest).deliver(todo)
        metrics.BREAKER_STATE.labels(dest).set(
            metrics.BREAKER_CODES.get(deliverer(dest).breaker.state, 0))
        for outcome in results:
            delivery = outcome.delivery
            status = outcome.status
            bind_event(event_of[outcome.delivery_id])
            key = (delivery.get("customer_key") or "").encode()
            if status == "retry":
                if int(delivery.get("attempt", 0)) >= settings.topic_retry_max:
                    status = "dead_lettered"
                else:
                    metrics.RETRIES.labels(dest, "topic").inc()
                    await retry_topics[dest].send(key=key, value=orjson.dumps(retry_record(
                        delivery, settings, outcome.reason, outcome.retry_after_s)))
                    await emit("deliver", "retrying", destination=dest,
                               action=delivery["action"], delivery_id=outcome.delivery_id,
                               event_id=delivery["event_id"], reason=outcome.reason)
                    continue
            if status in ("failed", "dead_lettered"):
                status = "dead_lettered"
                metrics.DLQ.labels(dest, outcome.reason.split(":")[0][:40]).inc()
                await deliveries_dlq.send(key=key, value=orjson.dumps(delivery_dead_letter(
                    delivery, outcome.reason, int(delivery.get("attempt", 0)) + outcome.attempts,
                    outcome.detail)))
            ledger[outcome.delivery_id] = {"status": status, "at": time.time()}
            metrics.OUTCOMES.labels(dest, delivery["action"], status).inc()
            age = event_age_s(delivery.get("envelope") or {})
            if status == "delivered" and age is not None:
                metrics.EVENT_AGE.labels(dest).observe(age)
            await emit("deliver", status, destination=dest, action=delivery["action"],
                       delivery_id=outcome.delivery_id, event_id=delivery["event_id"],
                       reason=outcome.reason)

    for dest in DESTINATIONS:
        _install_sink(app, dest, dest_topics[dest], retry_topics[dest], settings, settle)

    _install_web(app, settings)
    return app


def _install_sink(app, dest, main_topic, retry_topic, settings, settle) -> None:
    @app.agent(main_topic, name=f"sink-{dest}")
    async def sink(stream):
        batches = stream.take_events(settings.sink_batch_max, within=settings.sink_batch_window_s)
        async for events in batches:
            await settle(dest, [(event, orjson.loads(event.value)) for event in events])

    @app.agent(retry_topic, name=f"retry-{dest}")
    async def retry(stream):
        async for event in stream.events():
            delivery = orjson.loads(event.value)
            wait = float(delivery.get("not_before", 0)) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await settle(dest, [(event, delivery)])


def bind_event(event) -> None:
    """Make `event` Faust's current event, as stream iteration does for one event at a time.

    Batched iteration (`take_events`) leaves no current event, yet table reads and writes need
    one to pick the partition (and the RocksDB instance); this is the one place that knows."""
    from faust.streams import _current_event

    _current_event.set(weakref.ref(event))


def _install_web(app: faust.App, settings: Settings) -> None:
    from app import web

    web.install(app, settings)
