"""The canonical envelope: one record shape for every normalized event.

Envelopes are plain dicts (serialised with orjson) rather than Faust records: they cross several
topics per event and plain dicts are several times cheaper to encode and decode.

Shape::

    {
      "event_id": "<uuid5 of source + source id>",   # stable: a replay yields the same id
      "type": "loyalty.tier.moved",                   # dotted
      "source": "air",
      "occurred_at": "2026-11-22T10:00:00Z",          # UTC, ISO-8601 with Z
      "customer_key": "customer_id:C123",             # partition key: "<identifier type>:<value>"
      "identities": {"customer_id": "C123", "email": "a@b.c", ...},
      "attributes": {...flat facts...},
      "payload": {...typed details...},
      "trace": {"eesEventId": "...", "origin": "air.outbound/0/17", ...},
    }
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

EVENT_NAMESPACE = uuid.UUID("6f1c3f0e-2b7a-4c55-9d0e-8f3b5a4e2c10")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes

# Which identifier becomes the partition key when several are present, best first.
KEY_PRIORITY = (
    "customer_id",
    "braze_external_id",
    "sessionm_user_id",
    "insider_uuid",
    "air_wallet_id",
    "email",
    "phone",
    "line_uid",
)


class Rejected(ValueError):
    """Input that can't be understood. `code` is a bounded label (metrics); `detail` is free text
    for the dead-letter record and must not contain personal data."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def event_id_for(source: str, source_id: str) -> str:
    """A stable event id: the same upstream id always yields the same event id.

    This is `str(uuid.uuid5(EVENT_NAMESPACE, f"{source}:{source_id}"))` (RFC 4122 version 5)
    spelled out over the SHA-1 hex digest: the same string at a third of the cost, as every
    envelope needs one (tests/unit/test_normalize_speedups.py checks it against uuid5)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + f"{source}:{source_id}".encode()).hexdigest()
    # The version nibble becomes 5 and the variant's top bits 10 (hex 8, 9, a or b).
    return (f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{_VARIANT[digest[16]]}"
            f"{digest[17:20]}-{digest[20:32]}")


# The variant's hex digit for each hex digit of the digest at its place (a lookup: int() and
# indexing cost a tenth of event_id_for).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def utc_iso(value: datetime) -> str:
    if type(value) is datetime and value.tzinfo is UTC:  # parse_time's: equal means same instant
        return format_utc(value)
    return _utc_iso(value)


def _utc_iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_utc(value: datetime) -> str:
    """`_utc_iso` of a UTC datetime: the same text as `isoformat(timespec="milliseconds")`
    (milliseconds truncated) from lookups, a third of its cost. Every envelope formats its time,
    nearly always one not seen before, so this is not cached."""
    return (f"{_day_text(value.date())}{_TWO_DIGITS[value.hour]}:{_TWO_DIGITS[value.minute]}:"
            f"{_TWO_DIGITS[value.second]}{_MILLISECONDS[value.microsecond // 1000]}")


_TWO_DIGITS = [f"{number:02d}" for number in range(100)]
_MILLISECONDS = [f".{number:03d}Z" for number in range(1000)]


@functools.lru_cache(maxsize=64)
def _day_text(day: date) -> str:
    # `YYYY-MM-DDT`: a stream's events fall on a few days.
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}T"


def parse_time(raw: Any) -> datetime:
    """Parse an upstream timestamp tolerantly; naive times are UTC. Raises Rejected."""
    if isinstance(raw, str):
        return _parse_time_text(raw)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = raw / 1000 if raw > 1e11 else raw
        return datetime.fromtimestamp(seconds, tz=UTC)
    raise Rejected("invalid_value", "timestamp missing or not a string")


def parse_time_text(raw: str) -> datetime:
    """parse_time of a string, uncached: for callers that cache what they derive from it."""
    if not raw.strip():
        raise Rejected("invalid_value", "timestamp missing or not a string")
    text = raw.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Rejected("invalid_value", "timestamp is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# The same timestamps come back again and again (an AIR document repeats its event date in
# every entity, expiry dates are shared by many accounts), and datetimes are immutable.
_parse_time_text = functools.lru_cache(maxsize=1024)(parse_time_text)


def customer_key_of(identities: Mapping[str, Any]) -> str:
    for kind in KEY_PRIORITY:
        value = identities.get(kind)
        if value:
            return f"{kind}:{value}"
    for kind, value in sorted(identities.items()):
        if value:
            return f"{kind}:{value}"
    return ""


def make_envelope(
    *,
    source: str,
    type: str,
    source_id: str,
    occurred_at: datetime | str,
    identities: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
    trace: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build an envelope; identities with empty values are dropped."""
    if not source_id:
        raise Rejected("missing_field", "no source id to derive the event id from")
    when = parse_time(occurred_at) if isinstance(occurred_at, str) else occurred_at
    if not identities:
        ids = {}
    elif all(identities.values()):  # the normalizers' own maps: no empty value, a plain copy
        ids = dict(identities)
    else:  # `v or ...`: a truthy identifier is never empty, only falsy ones need the comparisons
        ids = {k: v for k, v in identities.items() if v or v not in (None, "", [], {})}
    return {
        "event_id": event_id_for(source, source_id),
        "type": type,
        "source": source,
        "occurred_at": utc_iso(when),
        "customer_key": customer_key_of(ids),
        "identities": ids,
        "attributes": dict(attributes or {}),
        "payload": dict(payload or {}),
        "trace": dict(trace or {}),
    }


def identities_union(*sets: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> dict[str, Any]:
    """Merge identity maps; earlier maps win on conflicts (the event's own ids beat looked-up ones)."""
    merged: dict[str, Any] = {}
    for ids in reversed(sets):
        items = ids.items() if isinstance(ids, Mapping) else ids
        merged.update({k: v for k, v in items if v})
    return merged
