"""Identity stage: resolve every normalized event to its profile id through the identifier index.

The `identities` table maps `<type>:<value>` -> profile id and is partitioned like
`events.normalized` and `identity.claims` (both keyed by an identifier key), so this agent only
reads and writes index entries of its own partitions:

- an envelope on `events.normalized` (key = its customer_key) is looked up locally; on a miss it
  hops through `identity.claims` to the partitions of its other identifiers (unify keys first),
  and a profile id is derived from its first identifier when none is known. It then goes to
  `identity.profiles` keyed by the profile id, unchanged unless identifiers had to be cleaned.
- a `bind` on `identity.claims` records that a profile holds an identifier: a unify-key
  conflict asks the larger profile id to merge into the smaller, or quarantines the value when
  more than AMBIGUOUS_KEY_LIMIT profiles would share it.

Design and ordering: docs/identity.md.
"""

from __future__ import annotations

import orjson
import structlog

from app import logs, metrics
from app.agents import shortcut
from app.agents.context import Relay, bind_event, read
from app.bundles import BUNDLES_PER_BATCH
from app.identity import graph
from app.identity import profile as profiles
from app.identity.keys import clean_identities, key_of, lookup_order, normalize_identifier
from app.pipeline import now_iso

log = structlog.get_logger(__name__)

OP = "relay-identity-op"
REST = "relay-identity-rest"
ANCHOR = "relay-identity-anchor"


def header(record, name: str) -> bytes | None:
    """A header's value on a record (an aiokafka record or a Faust message)."""
    for key, value in record.headers or ():
        if key == name:
            return value
    return None


def install(relay: Relay) -> None:
    app, settings = relay.app, relay.settings
    unify = settings.unify_keys
    index = relay.table("identities", value_type=bytes)
    source = app.topic("events.normalized", "identity.claims",
                       key_serializer="raw", value_serializer="raw")

    envelopes = shortcut.Shortcut(relay, shortcut.TOPIC, settings.identity_shortcut)
    claims = shortcut.Shortcut(relay, shortcut.CLAIMS, settings.identity_shortcut)

    # An envelope travels as `env` (parsed) and `raw` (its JSON), either of them None until
    # needed: one resolved here goes on parsed, one sent through a topic as JSON.

    async def next_hop(rest: list[str], env: dict | None, raw: bytes | None, anchor: str) -> None:
        if rest:
            key, later = rest[0], rest[1:]
            await claims.forward(key.encode(), env if raw is None else raw,
                                 lambda: lookup(key, later, env, raw, anchor),
                                 headers=[(OP, b"lookup"), (REST, orjson.dumps(later)),
                                          (ANCHOR, anchor.encode())])
        else:  # nobody knows any identifier of this event: a new profile
            await relay.to_profiles(graph.profile_id_for(anchor), env, raw)

    async def lookup(key: str, rest: list[str], env: dict | None, raw: bytes | None,
                     anchor: str) -> None:
        """At `key`'s index partition: its profile, or the next identifier's partition."""
        pid = graph.resolve(read(index, key))
        if pid:
            await relay.to_profiles(pid, env, raw)
            return
        await next_hop(rest, env, raw, anchor)

    async def on_envelope(key: str, env: dict, raw: bytes | None = None) -> None:
        """Resolve one envelope (`raw`: its bytes as received, when they may be passed on)."""
        logs.bind_event(env)
        ids = env.get("identities") or {}
        clean, rejected = clean_identities(ids, settings.default_region)
        if rejected or clean != ids:
            for note in rejected:
                metrics.IDENTITY_REJECTED.labels(note.split(": ", 1)[1]).inc()
            env["identities"] = clean
            if rejected:
                trace = env.setdefault("trace", {})
                trace["rejected_identifiers"] = sorted(
                    set(trace.get("rejected_identifiers") or ()) | set(rejected))
            raw = None
        keys = [k for _kind, k in lookup_order(clean, unify)]
        if not keys:  # nothing to resolve: route as it is
            await relay.to_profiles(key or env.get("event_id", ""), env, raw, op=b"anon")
            return
        if key in keys:  # this partition owns the record key's index entry: ask it first
            pid = graph.resolve(read(index, key))
            if pid:
                await relay.to_profiles(pid, env, raw)
                return
        await next_hop([k for k in keys if k != key], env, raw, keys[0])

    async def on_lookup(record, key: str) -> None:
        rest = orjson.loads(header(record, REST) or b"[]")
        await lookup(key, rest, None, record.value,
                     (header(record, ANCHOR) or key.encode()).decode())

    async def on_bind(key: str, msg: dict) -> None:
        kind, pid = msg["t"], msg["p"]
        decision = graph.bind(read(index, key), pid, unify=kind in unify,
                              limit=settings.ambiguous_key_limit, replaces=msg.get("r") or ())
        if decision.entry is not None:
            await relay.put(index, key, decision.entry.encode())
            metrics.IDENTITY_UPDATES.labels("index").inc()
        if decision.merge:
            loser, winner = decision.merge
            await relay.to_profiles(loser, {"into": winner}, op=b"merge")
        if decision.quarantine:
            metrics.IDENTITY_QUARANTINED.labels(kind).inc()
            log.warning("identity.quarantined", identifier_type=kind,
                        profiles=len(decision.quarantine))
            await relay.send("identity.quarantine", key, {
                "identifier": key, "profiles": list(decision.quarantine),
                "event_id": msg.get("e", ""), "reason": "ambiguous_unify_key",
                "limit": settings.ambiguous_key_limit, "at": now_iso()})

    async def resolve(env: dict) -> None:
        """Ingress's way on for an envelope: resolved at its own partition (events.normalized
        is keyed by the envelope's customer key)."""
        key = env["customer_key"]
        await envelopes.forward(key.encode(), env, lambda: on_envelope(key, env))

    async def bind(key: str, msg: dict) -> None:
        """The route stage's way to record that a profile holds an identifier."""
        await claims.forward(key.encode(), msg, lambda: on_bind(key, msg),
                             headers=[(OP, b"bind")])

    relay.resolve, relay.bind = resolve, bind
    for one in (envelopes, claims):
        shortcut.install(relay, one)

    @relay.batch_agent(source, name="identity", max_records=BUNDLES_PER_BATCH)
    async def identity_agent(batches):
        shortcut.consuming_here()
        async for batch in batches:
            async for part, record in batch.each():
                bind_event(part.event)
                for item in await relay.items_of("identity", record):
                    await on_record(item)
                # every item of the record is done
                gate = envelopes.gate if record.topic == shortcut.TOPIC else claims.gate
                gate.processed(record.partition, record.offset)

    async def on_record(item) -> None:
        try:
            key = (item.key or b"").decode()
            op = header(item, OP) if item.topic == "identity.claims" else None
            if op == b"bind":
                await on_bind(key, item.doc)
            elif op == b"lookup":
                await on_lookup(item, key)
            else:
                await on_envelope(key, item.doc)
        except Exception as exc:  # a bug must not stop the stream or lose the event
            await relay.internal_error("identity", item, exc)


def consent_view(consent: dict) -> dict:
    from app.safety.consent import effective

    view = {}
    for channel in sorted(consent):
        state = effective(consent, channel)
        if state:
            view[channel] = {"state": state[0], "at": state[1], "source": state[2],
                             "explicit": bool(state[3])}
    return view


def profile_view(relay: Relay, kind: str, raw_value: str, admin: bool) -> tuple[int, dict]:
    """`GET /profiles/{type}/{value}`: the unified profile, identifiers masked unless `admin`.
    Reads this worker's tables (every partition when it runs alone)."""
    from app.identity.keys import mask

    try:
        value = normalize_identifier(kind, raw_value, relay.settings.default_region)
    except ValueError:
        return 404, {"detail": "unknown identifier"}
    entry = graph.decode(relay.tables["identities"].get(key_of(kind, value)))
    if entry is None:
        return 404, {"detail": "unknown identifier"}
    table, pid, hops = relay.tables["profiles"], entry.owner, 0
    prof = profiles.loads(table.get(pid))
    while prof and "m" in prof and hops < 64:  # follow merges to the surviving profile
        pid, hops = prof["m"], hops + 1
        prof = profiles.loads(table.get(pid))
    if not prof:
        return 404, {"detail": "profile not materialized yet"}
    ids = {k: sorted(v, key=lambda x: (-v[x], x)) for k, v in prof.get("i", {}).items()}
    body = {"profile_id": pid, "quarantined": entry.quarantined, "updated_at": prof.get("u", 0)}
    if admin:
        body |= {"index_entry": entry.owner, "identifiers": ids,
                 "identities": profiles.flat_identities(prof),
                 "attributes": {k: v[0] for k, v in prof.get("a", {}).items()},
                 "notes": [{"at": ts, "note": note} for ts, note in prof.get("n", ())],
                 "consent": consent_view(prof.get("c") or {}),
                 "messages_sent": len(prof.get("h") or ())}
    else:
        body |= {"identifiers": {k: [mask(k, x) for x in vs] for k, vs in ids.items()},
                 "attribute_names": sorted(prof.get("a", {}))}
    return 200, body
