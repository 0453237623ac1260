"""`relay export`: a segment's members as a file another platform uploads.

- ``sessionm-tags``: the CSV SessionM accepts for large tag backfills, ``user_id,tag,ttl``, with
  the tag name and TTL of the segment in ``topics/segments.yaml`` (``ttl`` empty for a counter
  tag). ``user_id`` is the external id (customer_id, else braze_external_id; ``--user-id
  sessionm`` uses the SessionM user id instead), so the whole file names users one way.
- ``attentive-list``: the list Attentive uploads (Attentive has no segment API),
  ``phone,email,client_user_id`` with phones in E.164 (client_user_id: customer_id, else the
  Braze external id).

Members come from ``audience.membership``: every record for the segment is normalized like the
worker does, and the latest state per customer (``customer_key``; by ``occurred_at``, then topic
order) decides: the customers whose last change was "entered" are members. Records the
normalizer rejects are counted, not exported.

Their identifiers come from the identity graph (docs/identity.md): the changelogs of the worker's
``identities`` and ``profiles`` tables (``<APP_ID>-identities-changelog``,
``<APP_ID>-profiles-changelog``; keys are JSON strings, values raw bytes) are read to the end,
latest value per key winning and an empty value deleting the key. Each member is looked up by its
own identifiers (customer_id first, then the unify keys, then the others; a quarantined entry
resolves nothing), merge tombstones are followed to the surviving profile, and the member gets
the profile's identifiers with the record's own values winning conflicts (as the worker enriches
events), so a member known only by customer_id is exported with the phone, e-mail, SessionM user
id or Braze external id the graph knows. A member the graph doesn't know keeps the record's own
identifiers. Unreadable changelog records are counted and skipped. Nothing personal reaches
stderr: only counts.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.config import ConfigError, Settings
from app.identity import graph
from app.identity import profile as profiles
from app.identity.keys import clean_identities, key_of, lookup_order

KINDS = ("sessionm-tags", "attentive-list")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TOPIC = "audience.membership"
TABLES = ("identities", "profiles")  # the identity graph's Faust tables
MAX_HOPS = 64  # merge tombstones followed at most (merge targets strictly decrease: chains end)


@dataclass
class Export:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    members: int = 0
    skipped: int = 0  # members without the identifier the file needs
    rejected: int = 0  # membership records the normalizer rejected
    resolved: int = 0  # members found in the identity graph
    unreadable: int = 0  # identity-graph changelog records skipped as unreadable

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()

    def summary(self) -> str:
        return (f"exported {len(self.rows)} of {self.members} members"
                f" ({self.skipped} without the needed identifier,"
                f" {self.rejected} membership records rejected,"
                f" {self.resolved} found in the identity graph,"
                f" {self.unreadable} unreadable identity-graph records skipped)")


def latest_members(envelopes: Iterable[Mapping[str, Any]], segment: str) -> list[dict]:
    """The customers whose latest membership change for `segment` is "entered"."""
    latest: dict[str, tuple[str, int, Mapping[str, Any]]] = {}
    for position, env in enumerate(envelopes):
        payload = env.get("payload") or {}
        if str(payload.get("audience_id") or "") != segment:
            continue
        key = env.get("customer_key") or ""
        if not key:
            continue
        stamp = (str(env.get("occurred_at") or ""), position)
        if key not in latest or stamp >= latest[key][:2]:
            latest[key] = (*stamp, env)
    return [dict(env) for _, _, env in latest.values() if env.get("type") == "audience.entered"]


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of one of the worker's tables (Faust's naming)."""
    return f"{app_id}-{table}-changelog"


@dataclass
class GraphView:
    """The identity graph as its changelogs leave it: identifier key -> index entry bytes, and
    profile id -> profile bytes (parsed when a member needs it)."""
    index: dict[str, bytes] = field(default_factory=dict)
    profiles: dict[str, bytes] = field(default_factory=dict)
    unreadable: int = 0

    def add(self, table: str, raw_key: bytes | None, raw_value: bytes | None,
            wanted: set[str] | None = None) -> None:
        """Apply one changelog record of `table` ("identities" or "profiles"): the latest value
        per key wins, an empty value deletes, an unreadable key or value is counted and (for an
        unreadable value) deletes what the key held, since its current state is unknown.
        `wanted`: the only identifier keys worth keeping (every one when None)."""
        key = table_key(raw_key)
        if key is None:
            self.unreadable += 1
            return
        store = self.index if table == "identities" else self.profiles
        if raw_value is None:
            store.pop(key, None)
            return
        valid = index_entry_ok if table == "identities" else profile_ok
        if not valid(raw_value):
            self.unreadable += 1
            store.pop(key, None)
            return
        if table == "profiles" or wanted is None or key in wanted:
            store[key] = raw_value


def graph_view(records: Iterable[tuple[str, bytes | None, bytes | None]],
               wanted: set[str] | None = None) -> GraphView:
    """A GraphView from (table, key bytes, value bytes) changelog records in topic order."""
    view = GraphView()
    for table, key, value in records:
        view.add(table, key, value, wanted)
    return view


def table_key(raw: bytes | None) -> str | None:
    """A str table key from its changelog bytes (JSON-encoded string); None when unreadable."""
    if not raw:
        return None
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) and key else None


def index_entry_ok(raw: bytes) -> bool:
    try:
        entry = graph.decode(raw)
    except (orjson.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return False
    owner = entry.owner if entry is not None else None
    return (isinstance(owner, str) and owner.isprintable() and bool(owner)
            and not any(c.isspace() or c in "\"{}[]" for c in owner)
            and all(isinstance(c, str) for c in entry.claimants))


def profile_ok(raw: bytes) -> bool:
    try:
        prof = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(prof, dict):
        return False
    if "m" in prof:
        return isinstance(prof["m"], str) and bool(prof["m"])
    ids = prof.get("i", {})
    return isinstance(ids, dict) and all(
        isinstance(values, dict) and all(isinstance(ts, int | float) for ts in values.values())
        for values in ids.values())


def lookup_keys(ids: Mapping[str, str], unify: tuple[str, ...]) -> list[str]:
    """The index keys a member is looked up by: customer_id first, then the unify keys (in
    their configured order), then the other identifiers."""
    first = [key_of("customer_id", ids["customer_id"])] if ids.get("customer_id") else []
    rest = {k: v for k, v in ids.items() if k != "customer_id"}
    return first + [key for _kind, key in lookup_order(rest, unify)]


def surviving_profile(view: GraphView, pid: str) -> tuple[str, dict] | None:
    """The profile `pid` ended up in, following merge tombstones; None when it isn't in the
    changelog (not materialized yet) or the chain is longer than MAX_HOPS."""
    for _hop in range(MAX_HOPS + 1):
        raw = view.profiles.get(pid)
        if raw is None:
            return None
        prof = orjson.loads(raw)
        if "m" not in prof:
            return pid, prof
        pid = prof["m"]
    return None


def resolve_member(ids: Mapping[str, str], view: GraphView, unify: tuple[str, ...]
                   ) -> tuple[str, dict] | None:
    """(profile id, profile) of a member with clean identifiers `ids`: the first lookup key whose
    index entry resolves (quarantined entries resolve nothing) to a materialized profile."""
    for key in lookup_keys(ids, unify):
        pid = graph.resolve(view.index.get(key))
        if pid:
            found = surviving_profile(view, pid)
            if found:
                return found
    return None


def member_keys(members: Iterable[Mapping[str, Any]], settings: Settings) -> set[str]:
    """Every index key the members may be looked up by (what to keep of the identities
    changelog)."""
    keys: set[str] = set()
    for env in members:
        clean, _ = clean_identities(env.get("identities") or {}, settings.default_region)
        keys.update(lookup_keys(clean, settings.unify_keys))
    return keys


def with_graph_identities(members: Sequence[Mapping[str, Any]], view: GraphView,
                          settings: Settings) -> tuple[list[dict], int]:
    """The members with the identifiers of their unified profile (the record's own values win
    conflicts, as the worker enriches events), and how many the graph knew. Members the graph
    doesn't know keep their own identifiers."""
    out, resolved = [], 0
    for env in members:
        own = dict(env.get("identities") or {})
        clean, _ = clean_identities(own, settings.default_region)
        found = resolve_member(clean, view, settings.unify_keys)
        if found is None:
            out.append(dict(env))
            continue
        resolved += 1
        out.append({**env, "identities": {**profiles.flat_identities(found[1]), **own}})
    return out, resolved


def sessionm_tags(members: Sequence[Mapping[str, Any]], tag: str, ttl_s: int | None,
                  user_id: str = "external") -> Export:
    export = Export(["user_id", "tag", "ttl"], members=len(members))
    seen = set()
    for env in members:
        ids = env.get("identities") or {}
        if user_id == "sessionm":
            uid = ids.get("sessionm_user_id")
        else:
            uid = ids.get("customer_id") or ids.get("braze_external_id")
        if not uid:
            export.skipped += 1
            continue
        if uid in seen:
            continue
        seen.add(uid)
        export.rows.append([str(uid), tag, str(ttl_s) if ttl_s else ""])
    return export


def attentive_list(members: Sequence[Mapping[str, Any]]) -> Export:
    export = Export(["phone", "email", "client_user_id"], members=len(members))
    seen = set()
    for env in members:
        ids = env.get("identities") or {}
        phone = ids.get("phone") if E164.match(str(ids.get("phone") or "")) else None
        email = ids.get("email")
        if not phone and not email:
            export.skipped += 1
            continue
        key = (phone, email)
        if key in seen:
            continue
        seen.add(key)
        client = ids.get("customer_id") or ids.get("braze_external_id") or ""
        export.rows.append([phone or "", email or "", str(client)])
    return export


def build(kind: str, envelopes: Iterable[Mapping[str, Any]], segment: str, settings: Settings,
          user_id: str = "external", rejected: int = 0, view: GraphView | None = None
          ) -> Export:
    """The export of one kind from normalized membership envelopes, with identifiers from the
    identity graph `view` when given; ConfigError for a segment the segments file does not
    configure (sessionm-tags)."""
    members = latest_members(envelopes, segment)
    resolved = 0
    if view is not None:
        members, resolved = with_graph_identities(members, view, settings)
    if kind == "sessionm-tags":
        from app.destinations.sessionm.segments import load_segments

        spec = load_segments(settings.segments_file).get(segment)
        if spec is None:
            raise ConfigError(f"segment {segment!r} has no SessionM tag in SEGMENTS_FILE "
                              f"({settings.segments_file})")
        export = sessionm_tags(members, spec.tag, spec.ttl_s, user_id)
    elif kind == "attentive-list":
        export = attentive_list(members)
    else:
        raise ConfigError(f"unknown export {kind!r}; one of {', '.join(KINDS)}")
    export.rejected = rejected
    export.resolved = resolved
    export.unreadable = view.unreadable if view is not None else 0
    return export


async def read_memberships(settings: Settings, bootstrap, idle_s: float = 3.0
                           ) -> tuple[list[dict], int]:
    """Every normalizable audience.membership record (envelopes), and how many were rejected."""
    from app.envelope import Rejected
    from app.localstack import read_topic
    from app.normalize.audience import normalize

    envelopes, rejected = [], 0
    async for _topic, value in read_topic(bootstrap, [TOPIC], idle_timeout_s=idle_s):
        try:
            envelopes.extend(normalize(value, {}, settings))
        except Rejected:
            rejected += 1
    return envelopes, rejected


async def read_graph(settings: Settings, bootstrap, wanted: set[str] | None = None,
                     idle_s: float = 3.0) -> GraphView:
    """The identity graph from the changelogs of the worker's tables (APP_ID's); an empty view
    when no worker has created them yet."""
    from app.localstack import read_raw

    topics = {changelog_topic(settings.app_id, table): table for table in TABLES}
    view = GraphView()
    async for topic, key, value in read_raw(bootstrap, list(topics), idle_timeout_s=idle_s):
        view.add(topics[topic], key, value, wanted)
    return view


async def run_export(settings: Settings, bootstrap, kind: str, segment: str,
                     user_id: str = "external", idle_s: float = 3.0) -> Export:
    if kind == "sessionm-tags":  # fail on configuration before reading the topic
        build(kind, [], segment, settings, user_id)
    envelopes, rejected = await read_memberships(settings, bootstrap, idle_s)
    members = latest_members(envelopes, segment)
    view = GraphView()
    if members:  # keep only the index entries the members can be looked up by
        view = await read_graph(settings, bootstrap, member_keys(members, settings), idle_s)
    return build(kind, envelopes, segment, settings, user_id, rejected, view)
