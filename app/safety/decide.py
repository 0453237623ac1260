"""The verdict on one planned delivery: send, suppress or defer, and why.

Order, and why:

1. Not a message (`policy.message_kind` is None): send ("not_a_message"); attributes, events and
   tags are never held.
2. Consent: a marketing message on a channel without consent is suppressed ("no_consent",
   "opted_out"; on a channel whose policy says `consent: opt_out` only an opt-out suppresses,
   and a message without any record goes as "no_consent_required"). First, because it is final:
   no later hour or emptier window makes it sendable, and it is the reason a journey most needs
   to hear.
3. Caps: a message over a cap is suppressed ("cap:<name>"). Before quiet hours because a
   deferred message already counts (the history records it when it is deferred), so a message
   that would break a cap must be held now, not deferred to break it at 08:00.
4. Quiet hours: a message due inside the channel's window is deferred to its end ("quiet_hours"),
   unless it would be stale by then ("stale_in_quiet_hours", suppressed).

Staleness: the message's age at the window's end (from the envelope's `occurred_at`) against
`stale_after_s`, read from the envelope's `payload` (journey triggers carry it), else its
`attributes`, else the routing target's `params` (a rule's default for events that don't say).
Reasons are a small bounded set (`REASONS`, plus "cap:" + a configured cap name): they become
metric labels and feedback fields, and never hold personal data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.destinations.mapping import resolve
from app.envelope import parse_time
from app.safety import caps, quiet
from app.safety.consent import allows
from app.safety.policy import Policy, message_kind

ACTIONS = ("send", "suppress", "defer")
REASONS = frozenset({
    "not_a_message", "transactional", "consented", "no_consent_required",  # send
    "no_consent", "opted_out", "stale_in_quiet_hours",                      # suppress
    "quiet_hours",                                                          # defer
})
CAP_PREFIX = "cap:"


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    until: datetime | None = None
    channel: str | None = None
    purpose: str | None = None


def reason_label(reason: str) -> str:
    """The bounded metric label of a reason: "cap" for every "cap:<name>"."""
    return "cap" if reason.startswith(CAP_PREFIX) else reason


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def stale_after_s(delivery: Mapping[str, Any]) -> float | None:
    envelope = delivery.get("envelope") or {}
    params = delivery.get("params") or {}
    for raw in ((envelope.get("payload") or {}).get("stale_after_s"),
                (envelope.get("attributes") or {}).get("stale_after_s"),
                resolve(params.get("stale_after_s"), envelope)):
        seconds = _number(raw)
        if seconds is not None:
            return seconds
    return None


def _stale_at(delivery: Mapping[str, Any], until: datetime) -> bool:
    limit = stale_after_s(delivery)
    if limit is None:
        return False
    try:
        occurred = parse_time((delivery.get("envelope") or {}).get("occurred_at"))
    except (ValueError, OverflowError, OSError):
        return False
    return (until - occurred).total_seconds() > limit


def decide(policy: Policy, delivery: Mapping[str, Any], consent: Mapping[str, Any],
           history: Sequence[Any], zone: ZoneInfo, now: datetime) -> Decision:
    """Send, suppress or defer one planned delivery for a customer (module docstring)."""
    kind = message_kind(policy, delivery)
    if kind is None:
        return Decision("send", "not_a_message")
    channel, purpose = kind
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    allowed, why = allows(consent, channel, purpose)
    if not allowed and why == "no_consent" and policy.channel(channel).consent == "opt_out":
        allowed, why = True, "no_consent_required"
    if not allowed:
        return Decision("suppress", why, None, channel, purpose)
    item = [now.timestamp(), channel, purpose, caps.journey_of(delivery),
            str(delivery.get("delivery_id", ""))]
    cap = caps.check(history, policy.caps, item, now)
    if cap:
        return Decision("suppress", CAP_PREFIX + cap, None, channel, purpose)
    until = quiet.next_allowed(now, zone, policy.quiet_window(channel, purpose))
    if until is not None:
        if _stale_at(delivery, until):
            return Decision("suppress", "stale_in_quiet_hours", None, channel, purpose)
        return Decision("defer", "quiet_hours", until, channel, purpose)
    return Decision("send", why, None, channel, purpose)
