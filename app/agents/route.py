"""Route: enrich each envelope from the identity table, match the rules, fan out deliveries."""

from __future__ import annotations

import orjson
import structlog

from app import logs, metrics
from app.agents.context import Relay
from app.pipeline import enrich, route

log = structlog.get_logger(__name__)


def install(relay: Relay) -> None:
    identities = relay.table("identities")

    async def route_one(key: bytes | None, raw: bytes) -> None:
        env = orjson.loads(raw)
        logs.bind_event(env)
        ckey = env.get("customer_key") or ""
        if ckey:
            known = identities.get(ckey)
            merged = {**(known or {}), **env.get("identities", {})}
            if merged != known:
                identities[ckey] = merged
                metrics.IDENTITY_UPDATES.labels("event").inc()
            enrich(env, known)
        planned = route(relay.rules, env)
        log.debug("route.planned", deliveries=len(planned))
        if not planned:
            metrics.UNROUTED.labels(env.get("source", "")).inc()
        for delivery in planned:
            metrics.ROUTED.labels(delivery["destination"], delivery["action"]).inc()
            await relay.send(f"deliveries.{delivery['destination']}", key, delivery)
        await relay.emit("route", "routed", origin=env["trace"].get("origin"),
                         event_id=env["event_id"],
                         deliveries=[[d["destination"], d["action"], d["delivery_id"]]
                                     for d in planned])

    @relay.app.agent(relay.topic("events.normalized"), name="route")
    async def route_agent(stream):
        async for event in stream.events():
            try:
                await route_one(event.key, event.value)
            except Exception as exc:  # a bug must not stop the stream or lose the event
                await relay.internal_error("route", event, exc)
