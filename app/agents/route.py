"""Route: the profile stage. Events arrive on `identity.profiles` keyed by profile id; each one
updates its profile (new identifiers, and attributes of `identity.updated`), is enriched with the
profile's full identifier set and selected attributes, then matched against the rules and fanned
out to the delivery topics.

The same topic carries the two merge steps, so everything about one profile is ordered:
`merge` (to the losing profile: leave a tombstone, send its content to the winner) and `absorb`
(to the winner: merge the content in, re-point the loser's identifiers). Events that reach a
tombstone follow it. Design: docs/identity.md.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from faust.streams import current_event

from app import logs, metrics
from app.agents import shortcut
from app.agents.context import Relay, bind_event, read
from app.agents.identity import OP, header
from app.agents.screen import apply_signal_list, apply_signals, install_outcome_consent, screen
from app.bundles import BUNDLES_PER_BATCH, Item
from app.identity import profile as profiles
from app.identity.keys import key_of
from app.pipeline import route

log = structlog.get_logger(__name__)


async def deliver(relay: Relay, env: dict[str, Any], prof: dict | None = None) -> None:
    """Plan an enriched envelope's deliveries, screen the messages among them (consent, caps,
    quiet hours: app/agents/screen.py) and send the rest (key: the envelope's customer_key)."""
    planned = route(relay.rules, env)
    log.debug("route.planned", deliveries=len(planned))
    if not planned:
        metrics.UNROUTED.labels(env.get("source", "")).inc()
    key = env.get("customer_key") or None
    for delivery in planned:
        metrics.ROUTED.labels(delivery["destination"], delivery["action"]).inc()
        if await screen(relay, delivery, prof) == "send":
            await relay.send(f"deliveries.{delivery['destination']}", key, delivery)
    await relay.emit("route", "routed", origin=env["trace"].get("origin"),
                     event_id=env["event_id"],
                     deliveries=[[d["destination"], d["action"], d["delivery_id"]]
                                 for d in planned])


def install(relay: Relay) -> None:
    table = relay.table("profiles", value_type=bytes)
    names = relay.settings.profile_attributes

    async def bind(kind: str, value: str, pid: str, event_id: str, replaces=()) -> None:
        await relay.bind(key_of(kind, value),
                         {"t": kind, "p": pid, "r": list(replaces), "e": event_id})

    async def on_event(pid: str, item) -> None:
        env = item.doc
        logs.bind_event(env)
        prof = profiles.loads(read(table, pid))
        if prof is not None and "m" in prof:  # merged: the surviving profile takes it
            await to_profiles(prof["m"], env)
            return
        prof = prof or profiles.new_profile()
        attrs = env.get("attributes") if env.get("type") == "identity.updated" else None
        changed, new = profiles.apply(prof, env.get("identities") or {},
                                      profiles.epoch(env.get("occurred_at")), attrs)
        changed |= apply_signals(prof, env)
        profiles.enrich(env, pid, prof, names)
        history = prof.get("h")
        await deliver(relay, env, prof)
        if changed or prof.get("h") is not history:
            await relay.put(table, pid, profiles.dumps(prof))
            metrics.IDENTITY_UPDATES.labels("profile").inc()
        for kind, value in new:
            await bind(kind, value, pid, env.get("event_id", ""))

    async def on_merge(loser: str, winner: str) -> None:
        prof = profiles.loads(table.get(loser))
        if prof is not None and "m" in prof:
            if prof["m"] != winner:  # already merged elsewhere: unite the two survivors
                low, high = sorted((prof["m"], winner))
                await to_profiles(high, {"into": low}, op=b"merge")
            return
        await relay.put(table, loser, orjson.dumps({"m": winner}))
        metrics.IDENTITY_MERGES.inc()
        log.info("identity.merged")
        if prof:
            await to_profiles(winner, {"from": loser, "via": [], "profile": prof},
                              op=b"absorb")

    async def on_absorb(pid: str, msg: dict[str, Any]) -> None:
        prof = profiles.loads(table.get(pid))
        if prof is not None and "m" in prof:  # this one was merged too: pass it on
            msg["via"].append(pid)
            await to_profiles(prof["m"], msg, op=b"absorb")
            return
        await relay.put(table, pid, profiles.dumps(
            profiles.merge(prof or profiles.new_profile(), msg["profile"])))
        replaces = [msg["from"], *msg["via"]]
        for kind, value in profiles.all_identifiers(msg["profile"]):
            await bind(kind, value, pid, "", replaces)

    async def on_consent(pid: str, msg: dict[str, Any]) -> None:
        prof = profiles.loads(table.get(pid))
        if prof is not None and "m" in prof:
            await to_profiles(prof["m"], msg, op=b"consent")
            return
        prof = prof or profiles.new_profile()
        if apply_signal_list(prof, msg.get("signals") or []):
            await relay.put(table, pid, profiles.dumps(prof))

    install_outcome_consent(relay)

    async def on_record(item) -> None:
        try:
            key = (item.key or b"").decode()
            op = header(item, OP)
            if op is None:
                await on_event(key, item)
            elif op == b"merge":
                await on_merge(key, item.doc["into"])
            elif op == b"absorb":
                await on_absorb(key, item.doc)
            elif op == b"consent":
                await on_consent(key, item.doc)
            else:  # anon: no identifiers to resolve
                logs.bind_event(item.doc)
                await deliver(relay, item.doc)
        except Exception as exc:  # a bug must not stop the stream or lose the event
            await relay.internal_error("route", item, exc)

    lane = shortcut.Shortcut(relay, shortcut.PROFILES, relay.settings.identity_shortcut,
                             exclusive=True)
    shortcut.install(relay, lane)

    async def to_profiles(pid: str, doc: Any, raw: bytes | None = None,
                          op: bytes | None = None) -> None:
        """The route stage's work on a record for profile `pid`: run here when its partition
        allows (app/agents/shortcut.py), else sent to `identity.profiles`."""
        headers = [(OP, op)] if op else None
        await lane.forward(pid.encode(), doc if raw is None else raw,
                           lambda: on_record(_local_item(pid, headers, doc, raw)), headers=headers)

    relay.to_profiles = to_profiles

    @relay.batch_agent(relay.topic(shortcut.PROFILES), name="route",
                       max_records=BUNDLES_PER_BATCH)
    async def route_agent(batches):
        shortcut.consuming_here()
        async for batch in batches:
            async for part, record in batch.each():
                bind_event(part.event)
                async with lane.holding(record.partition):
                    for item in await relay.items_of("route", record):
                        await on_record(item)
                lane.gate.processed(record.partition, record.offset)


def _local_item(pid: str, headers: list | None, doc: Any, raw: bytes | None) -> Item:
    """A record the route stage runs without the topic, shaped like one read from it (for
    `on_record` and, should it fail, its dead letter)."""
    partition = current_event().message.partition
    if doc is None:
        doc = orjson.loads(raw)
    return Item(shortcut.PROFILES, partition, -1, pid.encode(), headers or [], doc, raw)
