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

    async def normalize_one(event) -> None:
        msg = event.message
        origin = origin_of(msg.topic, msg.partition, msg.offset)
        logs.bind_event(origin=origin)
        metrics.CONSUMED.labels(msg.topic).inc()
        headers = list(msg.headers or [])
        resend = next((v.decode() for k, v in headers if k == RESEND_HEADER and v), None)
        try:
            envelopes = normalize_record(msg.topic, event.value, dict(headers), settings)
        except Rejected as exc:
            metrics.INGRESS_DLQ.labels(TOPIC_SOURCES.get(msg.topic, ""), exc.code).inc()
            log.info("ingress.rejected", topic=msg.topic, reason=exc.code)
            await relay.send("ingress.dlq", event.key, ingress_dead_letter(
                exc, msg.topic, msg.partition, msg.offset, event.key, event.value, headers))
            await relay.emit("ingress", "dead_lettered", origin=origin, reason=exc.code)
            return
        for env in envelopes:
            env["trace"]["origin"] = origin
            logs.bind_event(env)
            if resend:
                env["trace"]["resend"] = resend
            metrics.NORMALIZED.labels(env["source"], env["type"]).inc()
            if env["type"].endswith(".unmapped"):
                metrics.UNMAPPED.labels(env["source"]).inc()
            await relay.shortcut.forward(env)
            log.debug("ingress.normalized", source=env["source"])
        await relay.emit("ingress", "normalized", origin=origin,
                         event_ids=[e["event_id"] for e in envelopes])

    @app.agent(ingress, name="ingress")
    async def ingress_agent(stream):
        async for event in stream.events():
            try:
                await normalize_one(event)
            except Exception as exc:  # a bug must not stop the stream or lose the record
                await relay.internal_error("ingress", event, exc)
