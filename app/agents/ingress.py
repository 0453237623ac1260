"""Ingress: every ingress topic -> normalized envelopes on events.normalized (or resolved here,
app/agents/shortcut.py), or ingress.dlq."""

from __future__ import annotations

import structlog

from app import logs, metrics
from app.agents.context import Relay
from app.envelope import Rejected
from app.pipeline import TOPIC_SOURCES, ingress_dead_letter, normalize_record, origin_of

log = structlog.get_logger(__name__)

# Set by `relay replay --resend`: deliveries of this record get new ids and are sent again.
RESEND_HEADER = "relay-resend"


def install(relay: Relay) -> None:
    app, settings = relay.app, relay.settings
    topics = [t for t in TOPIC_SOURCES if t in relay.catalog]
    ingress = app.topic(*topics, key_serializer="raw", value_serializer="raw")

    async def normalize_one(record) -> None:
        origin = origin_of(record.topic, record.partition, record.offset)
        logs.bind_event(origin=origin)
        metrics.CONSUMED.labels(record.topic).inc()
        headers = list(record.headers or [])
        resend = next((v.decode() for k, v in headers if k == RESEND_HEADER and v), None)
        try:
            envelopes = normalize_record(record.topic, record.value, dict(headers), settings)
        except Rejected as exc:
            metrics.INGRESS_DLQ.labels(TOPIC_SOURCES.get(record.topic, ""), exc.code).inc()
            log.info("ingress.rejected", topic=record.topic, reason=exc.code)
            await relay.send("ingress.dlq", record.key, ingress_dead_letter(
                exc, record.topic, record.partition, record.offset, record.key, record.value,
                headers))
            await relay.emit("ingress", "dead_lettered", origin=origin, reason=exc.code)
            return
        for env in envelopes:
            env["trace"]["origin"] = origin
        for tap in relay.ingress_taps.get(record.topic, ()):
            try:
                await tap(envelopes)
            except Exception as exc:  # a tap's bug must not cost the record its main path
                log.warning("ingress.tap_error", topic=record.topic, error=type(exc).__name__)
        for env in envelopes:
            logs.bind_event(env)
            if resend:
                env["trace"]["resend"] = resend
            metrics.NORMALIZED.labels(env["source"], env["type"]).inc()
            if env["type"].endswith(".unmapped"):
                metrics.UNMAPPED.labels(env["source"]).inc()
            await relay.resolve(env)
            log.debug("ingress.normalized", source=env["source"])
        await relay.emit("ingress", "normalized", origin=origin,
                         event_ids=[e["event_id"] for e in envelopes])

    @relay.batch_agent(ingress, name="ingress")
    async def ingress_agent(batches):
        async for batch in batches:
            async for _part, record in batch.each():
                try:
                    await normalize_one(record)
                except Exception as exc:  # a bug must not stop the stream or lose the record
                    await relay.internal_error("ingress", record, exc)
