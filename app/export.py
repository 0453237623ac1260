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
normalizer rejects are counted, not exported. Nothing personal reaches stderr: only counts.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.config import ConfigError, Settings

KINDS = ("sessionm-tags", "attentive-list")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TOPIC = "audience.membership"


@dataclass
class Export:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    members: int = 0
    skipped: int = 0  # members without the identifier the file needs
    rejected: int = 0  # membership records the normalizer rejected

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()

    def summary(self) -> str:
        return (f"exported {len(self.rows)} of {self.members} members"
                f" ({self.skipped} without the needed identifier,"
                f" {self.rejected} membership records rejected)")


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
          user_id: str = "external", rejected: int = 0) -> Export:
    """The export of one kind from normalized membership envelopes; ConfigError for a segment
    the segments file does not configure (sessionm-tags)."""
    members = latest_members(envelopes, segment)
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


async def run_export(settings: Settings, bootstrap, kind: str, segment: str,
                     user_id: str = "external", idle_s: float = 3.0) -> Export:
    if kind == "sessionm-tags":  # fail on configuration before reading the topic
        build(kind, [], segment, settings, user_id)
    envelopes, rejected = await read_memberships(settings, bootstrap, idle_s)
    return build(kind, envelopes, segment, settings, user_id, rejected)
