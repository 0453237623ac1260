"""Cross-channel frequency caps over sliding windows, per customer.

A customer's contact history is a list of the messages the relay let through (or deferred),
oldest first, one entry per delivery id::

    [[ts, channel, purpose, journey, delivery_id], ...]      # ts: epoch seconds of the decision

A cap counts the entries inside its window (ts > now - window) that match it (channel, purpose,
and for `per: journey` the same journey) and holds a message that would be one too many.
The delivery id makes replays harmless: a message already in the history is neither counted
again nor capped (it was allowed once; the sink's ledger stops a second send). The history keeps
what the longest window needs, and at most `HISTORY_MAX` entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from app.safety.policy import Cap

HISTORY_MAX = 500
JOURNEY_MAX = 100

Entry = list


def journey_of(delivery: Mapping[str, Any]) -> str | None:
    """The journey a message belongs to, for `per: journey` caps: the Insider journey (id, else
    name), else the SessionM message's Braze canvas or campaign; None for anything else."""
    envelope = delivery.get("envelope") if isinstance(delivery.get("envelope"), Mapping) else {}
    attrs = envelope.get("attributes") if isinstance(envelope.get("attributes"), Mapping) else {}
    payload = envelope.get("payload") if isinstance(envelope.get("payload"), Mapping) else {}
    journey = payload.get("journey") if isinstance(payload.get("journey"), Mapping) else {}
    for prefix, value in (("journey", attrs.get("journey_id") or journey.get("id")),
                          ("journey", attrs.get("journey_name") or journey.get("name")),
                          ("canvas", payload.get("canvas_id")),
                          ("campaign", payload.get("campaign_id"))):
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return f"{prefix}:{str(value).strip()}"[:JOURNEY_MAX]
    return None


def _seconds(now: datetime | float) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def _entries(history: Iterable[Any]) -> list[Entry]:
    """The well-formed entries (a damaged one counts for nothing rather than failing a send)."""
    return [list(e) for e in history or () if isinstance(e, (list, tuple)) and len(e) >= 5
            and isinstance(e[0], (int, float)) and not isinstance(e[0], bool)]


def _counts(cap: Cap, entry: Sequence[Any], journey: Any) -> bool:
    return cap.matches(entry[1], entry[2]) and (cap.per != "journey" or entry[3] == journey)


def check(history: Iterable[Any], caps: Iterable[Cap], item: Sequence[Any],
          now: datetime | float) -> str | None:
    """The name of the first cap `item` ([ts, channel, purpose, journey, delivery_id]) would
    exceed at `now`, or None when it is allowed (always for a delivery id already recorded)."""
    entries = _entries(history)
    _, channel, purpose, journey, delivery_id = item[:5]
    if any(e[4] == delivery_id for e in entries):
        return None
    at = _seconds(now)
    for cap in caps:
        if not cap.matches(channel, purpose) or (cap.per == "journey" and not journey):
            continue
        since = at - cap.window_s
        if sum(1 for e in entries if e[0] > since and _counts(cap, e, journey)) >= cap.max:
            return cap.name
    return None


def record(history: Iterable[Any], item: Sequence[Any], now: datetime | float, keep_s: float,
           max_len: int = HISTORY_MAX) -> list[Entry]:
    """A new history with `item` (unless its delivery id is there) and without entries older
    than `keep_s` (the longest cap window), oldest first, at most `max_len` entries."""
    since = _seconds(now) - keep_s
    entries = [e for e in _entries(history) if e[0] > since]
    if not any(e[4] == item[4] for e in entries) and item[0] > since:
        entries.append(list(item[:5]))
    entries.sort(key=lambda e: (e[0], str(e[4])))
    return entries[-max_len:] if max_len > 0 else []
